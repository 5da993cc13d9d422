"""The one pass over a reference FASTA that validates it and builds its .fai (and .gzi).

pyfaidx and htslib get several malformed files silently wrong (RELIABILITY.md §2.1), so the
whole file is read once, in binary, a chunk at a time with numpy, checking every rule of
RELIABILITY.md §3 A and collecting the index rows on the way.  BGZF is decompressed block by
block here rather than through a library so that each block's offsets land in the .gzi.  The
result is cached in genoformer's private cache, keyed by file size and mtime, so a 3 GB genome
is scanned once, not on every open.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from genoformer.errors import FastaError
from genoformer.interrupt import raise_if_terminated
from genoformer.outputs import write_bytes

log = logging.getLogger(__name__)

_CHUNK = 16 << 20  # bytes per scan step: big enough for numpy to pay off, small enough for RAM
_SCAN_VERSION = 1  # bump when the cached scan's content or checks change

_OK_BYTES = bytes(range(33, 127)) + b"\n\r"  # graphic ASCII plus line ends
_BAD = np.ones(256, bool)
_BAD[list(_OK_BYTES)] = False
_REWRAP = "rewrap to one line length, e.g. `seqkit seq -w 60 in.fa > out.fa`"
_COMPRESSED = {b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd", b"PK\x03\x04": "zip"}
# other genomics files given as the reference: their content's first bytes (BGZF decompressed) -> what
_NOT_FASTA = {b"BAM\x01": ("a BAM file (aligned reads)", "--bam"), b"CRAM": ("a CRAM file (aligned reads)", "--bam"),
              b"BCF\x02": ("a BCF file (variants)", "--truth-vcf"),
              b"##fileformat=VCF": ("a VCF file (variants)", "--truth-vcf")}


def cache_dir() -> Path:
    """genoformer's private cache folder (not created here)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "genoformer"


# ---------------------------------------------------------------------------------------------
# reading: plain or BGZF, as chunks of decompressed bytes


def sniff(path: Path) -> bool:
    """True for BGZF, False for plain text; raise for anything else we cannot index."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(18)
    except FileNotFoundError:
        raise FastaError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise FastaError(f"{path}: is a directory, not a FASTA file") from None
    except OSError as exc:
        raise FastaError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not head:
        raise FastaError(f"{path}: empty file (0 bytes), no FASTA records")
    _refuse_other_format(path, head)
    for magic, kind in _COMPRESSED.items():
        if head.startswith(magic):
            raise FastaError(f"{path}: {kind}-compressed; only plain or bgzip-compressed FASTA can be indexed",
                             hint=f"recompress with bgzip, e.g. decompress it and run `bgzip {path.stem}`")
    gz_name = path.name.lower().endswith((".gz", ".bgz"))  # how pyfaidx decides to read BGZF
    if head[:2] != b"\x1f\x8b":
        if gz_name:
            raise FastaError(f"{path}: named like a compressed file but is not compressed",
                             hint="rename it without .gz/.bgz")
        return False
    if not _is_bgzf_header(head):
        raise FastaError(f"{path}: compressed with plain gzip, not bgzip, so it cannot be indexed",
                         hint=f"recompress with bgzip: `zcat {path} | bgzip > out.fa.gz`, or gunzip it")
    if not gz_name:
        raise FastaError(f"{path}: bgzip-compressed but its name does not end in .gz or .bgz",
                         hint="rename it to end in .gz")
    return True


def _refuse_other_format(path: Path, head: bytes) -> None:
    """FastaError naming the kind of file when `path` holds reads or variants rather than a FASTA."""
    content = head
    if _is_bgzf_header(head):
        try:
            with open(path, "rb") as fh:
                block = fh.read(struct.unpack_from("<H", head, 16)[0] + 1)
            content = zlib.decompressobj(wbits=31).decompress(block, 64)
        except (OSError, zlib.error):
            return  # the scan reports a broken block with its offset
    for magic, (what, option) in _NOT_FASTA.items():
        if content.startswith(magic):
            raise FastaError(f"{path}: {what}, not a FASTA reference",
                             hint=f"give the reference FASTA as --reference (and this file as {option})")


def _is_bgzf_header(head: bytes) -> bool:
    # SAM spec §4.1: gzip member with FEXTRA and a 'BC' subfield of length 2 holding BSIZE
    return len(head) >= 18 and head[:4] == b"\x1f\x8b\x08\x04" and head[12:14] == b"BC" and head[14:16] == b"\x02\x00"


def _plain_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            yield chunk


def _bgzf_chunks(path: Path, gzi: list[tuple[int, int]]) -> Iterator[bytes]:
    """Decompress block by block, appending each block's (compressed, uncompressed) start to `gzi`."""
    cpos = upos = 0
    parts, size, last_len = [], 0, -1
    with open(path, "rb") as fh:
        while head := fh.read(18):
            if not _is_bgzf_header(head):
                raise FastaError(f"{path}: not a valid bgzip block at byte {cpos:,} (truncated, corrupt, "
                                 "or gzip members appended?)", hint="re-create it with bgzip")
            xlen, bsize = struct.unpack_from("<H", head, 10)[0], struct.unpack_from("<H", head, 16)[0] + 1
            rest = fh.read(max(bsize - 18, 0))
            try:
                if len(rest) != bsize - 18 or bsize < 12 + xlen + 8:
                    raise zlib.error("ends inside a block")
                data = zlib.decompress(rest[xlen - 6:-8], -15)
                crc, isize = struct.unpack("<II", rest[-8:])
                if len(data) != isize or zlib.crc32(data) != crc:
                    raise zlib.error("size or CRC mismatch")
            except zlib.error as exc:
                raise FastaError(f"{path}: corrupt or truncated bgzip block at byte {cpos:,} ({exc})",
                                 hint="re-copy or re-create the file") from None
            if cpos:
                gzi.append((cpos, upos))
            cpos, upos, last_len = cpos + bsize, upos + len(data), len(data)
            parts.append(data)
            size += len(data)
            if size >= _CHUNK:
                yield b"".join(parts)
                parts, size = [], 0
    if last_len != 0:
        raise FastaError(f"{path}: truncated (no bgzip end-of-file block)", hint="re-copy or re-create the file")
    if cpos > bsize:
        gzi.pop()  # htslib leaves the empty EOF block out of the .gzi
    yield b"".join(parts)


# ---------------------------------------------------------------------------------------------
# the scan: .fai entries plus every check of RELIABILITY.md §3 A, one chunk of lines at a time


class _Scanner:
    def __init__(self, path: Path):
        self.path = path
        self.records: list[list] = []  # .fai rows: name, length, offset, line bases, line bytes
        self.empty: list[list] = []  # [name, header line] of records without sequence
        self.names: dict[str, int] = {}
        self.dups: list[tuple[str, int, int]] = []
        self.counts = np.zeros(256, np.int64)  # byte histogram of sequence lines
        self.first_line: dict[int, int] = {}  # byte value -> first sequence line holding it
        self.line_no = self.offset = 0
        self.prev_cr = False
        self.name: str | None = None

    def run(self, chunks: Iterator[bytes]) -> None:
        carry = b""
        for chunk in chunks:
            raise_if_terminated()
            if b"\0" in chunk:
                what = "a BAM file" if chunk.startswith(b"BAM\1") else "binary data"
                at = self.offset + len(carry) + chunk.index(b"\0")
                raise FastaError(f"{self.path}: {what} (NUL byte at byte {at:,}), not a FASTA file")
            data = carry + chunk if carry else chunk
            self._check_cr(data, final=False)
            cut = data.rfind(b"\n") + 1
            self.feed(data[:cut])
            carry = data[cut:]
        self._check_cr(carry, final=True)
        self.feed(carry)
        self._end_record()
        if self.dups:
            listed = ", ".join(f"{n!r} (lines {a} and {b})" for n, a, b in self.dups[:5])
            raise FastaError(f"{self.path}: duplicate contig names: {listed}",
                             hint="the name is the first word after '>'; make each one unique")
        if not self.records and not self.empty:
            raise FastaError(f"{self.path}: no FASTA records (no line starts with '>')")

    def _check_cr(self, data: bytes, final: bool) -> None:
        if b"\r" in data and data.count(b"\r") - data.count(b"\r\n") - (not final and data.endswith(b"\r")) > 0:
            pos = data.find(b"\r")
            while data[pos + 1:pos + 2] == b"\n":
                pos = data.find(b"\r", pos + 1)
            line = self.line_no + data.count(b"\n", 0, pos) + 1
            raise FastaError(f"{self.path}: carriage return not followed by a newline at line {line} "
                             "(CR-only line endings?)", hint="convert line endings to LF, e.g. `tr '\\r' '\\n'`")

    def feed(self, buf: bytes) -> None:
        """Check and index complete lines (`buf` ends with a newline, or at the end of the file)."""
        if not buf:
            return
        arr = np.frombuffer(buf, np.uint8)
        ends = np.flatnonzero(arr == 10)
        if buf[-1] != 10:
            ends = np.append(ends, len(buf))
        starts = np.concatenate(([0], ends[:-1] + 1))
        nbytes = ends - starts
        full = nbytes > 0
        cr = np.zeros(len(ends), bool)
        cr[full] = arr[ends[full] - 1] == 13
        bases = nbytes - cr
        if buf[-1] != 10:  # the file's last line, unterminated: no line ending to compare
            cr[-1] = cr[-2] if len(cr) > 1 else self.prev_cr
        head = np.zeros(len(ends), bool)
        head[full] = arr[starts[full]] == ord(">")
        hidx = np.flatnonzero(head).tolist()
        lines = self.line_no + 1 + np.arange(len(ends))
        in_head = np.repeat(head, nbytes + 1)[:len(buf)] if hidx else None  # per byte
        if self.name is None:  # only blank lines may come before the first header
            self._seq_lines(bases[:hidx[0] if hidx else None], cr, lines)
        self._check_bytes(buf, arr, ends, starts, in_head, lines)
        self._count(arr, ends, in_head, lines)
        prev = 0
        for h in hidx:
            self._seq_lines(bases[prev:h], cr[prev:h], lines[prev:h])
            self._end_record()
            self._start_record(buf[starts[h]:ends[h]], int(lines[h]), self.offset + int(ends[h]) + 1)
            prev = h + 1
        self._seq_lines(bases[prev:], cr[prev:], lines[prev:])
        self.line_no += len(ends)
        self.offset += len(buf)
        self.prev_cr = bool(cr[-1])

    def _check_bytes(self, buf, arr, ends, starts, in_head, lines) -> None:
        if not len(buf.translate(None, _OK_BYTES)):  # fast path (C speed): nothing but graphic ASCII
            return
        bad = _BAD[arr] if in_head is None else _BAD[arr] & ~in_head  # headers may hold spaces
        pos = np.flatnonzero(bad)
        if not pos.size:
            return
        pos = int(pos[0])
        i = int(np.searchsorted(ends, pos))
        what = {32: "a space", 9: "a tab"}.get(buf[pos], f"byte 0x{buf[pos]:02x}")
        raise FastaError(f"{self.path}: {what} inside a sequence line at line {lines[i]}, column {pos - starts[i] + 1}",
                         hint="sequence lines may hold only sequence letters; samtools and pyfaidx would "
                              f"misread this file; {_REWRAP}")

    def _count(self, arr, ends, in_head, lines) -> None:
        counts = _histogram(arr if in_head is None else arr[~in_head])
        for v in np.flatnonzero((counts > 0) & (self.counts == 0)).tolist():
            if v not in (10, 13):
                hit = (arr == v) if in_head is None else (arr == v) & ~in_head
                self.first_line[v] = int(lines[np.searchsorted(ends, np.argmax(hit))])
        self.counts += counts

    def _start_record(self, header: bytes, line: int, offset: int) -> None:
        words = header[1:].split()
        if not words:
            raise FastaError(f"{self.path}: empty sequence name at line {line}",
                             hint="every '>' line needs a name right after the '>'")
        try:
            name = words[0].decode("utf-8")
        except UnicodeDecodeError:
            raise FastaError(f"{self.path}: sequence name at line {line} is not valid UTF-8 text") from None
        if name in self.names:
            self.dups.append((name, self.names[name], line))
        else:
            self.names[name] = line
        self.name, self.header_line, self.seq_offset = name, line, offset
        self.width, self.crlf, self.n_bases, self.stop = 0, False, 0, None

    def _end_record(self) -> None:
        if self.name is None:
            return
        if self.n_bases:
            self.records.append([self.name, self.n_bases, self.seq_offset, self.width, self.width + 1 + self.crlf])
        else:
            self.empty.append([self.name, self.header_line])

    def _seq_lines(self, bases: np.ndarray, cr: np.ndarray, lines: np.ndarray) -> None:
        """Lines between headers: all as long as the first, the last no longer, no blank line inside."""
        if not len(bases):
            return
        nz = np.flatnonzero(bases)
        if self.name is None:
            if nz.size:
                raise FastaError(f"{self.path}: text before the first '>' header at line {lines[nz[0]]}",
                                 hint="a FASTA file starts with a '>name' line (FASTQ starts with '@')")
            return
        if not nz.size:
            self.stop = self.stop or ("blank", int(lines[0]))
            return
        if self.stop:
            self._raise_stop()
        last = int(nz[-1])
        if nz.size != last + 1:
            self.stop = ("blank", int(lines[np.flatnonzero(bases[:last] == 0)[0]]))
            self._raise_stop()
        x = bases[:last + 1]
        if not self.width:
            # a first line that disagrees with the two after it is the odd one out
            first = 1 if len(x) >= 3 and x[0] != x[1] == x[2] else 0
            self.width, self.crlf = int(x[first]), bool(cr[first])
        wrong = np.flatnonzero(x[:-1] != self.width)
        at = int(wrong[0]) if wrong.size else (last if x[-1] > self.width else None)
        if at is not None:
            raise FastaError(f"{self.path}: inconsistent line length in {self.name!r} at line {lines[at]} "
                             f"({x[at]} bases, the record's lines have {self.width})", hint=_REWRAP)
        mixed = np.flatnonzero(cr[:last + 1] != self.crlf)
        if mixed.size:
            raise FastaError(f"{self.path}: mixed LF and CRLF line endings in {self.name!r} at line "
                             f"{lines[mixed[0]]}", hint="convert all line endings to LF")
        self.n_bases += int(x.sum())
        if x[-1] < self.width:
            self.stop = ("short", int(lines[last]))
        elif last + 1 < len(bases):
            self.stop = ("blank", int(lines[last + 1]))

    def _raise_stop(self) -> None:
        kind, line = self.stop
        if kind == "blank":
            raise FastaError(f"{self.path}: blank line inside record {self.name!r} at line {line}",
                             hint="remove blank lines inside records (samtools faidx rejects them too)")
        raise FastaError(f"{self.path}: inconsistent line length in {self.name!r} at line {line} "
                         f"(shorter than the record's {self.width}-base lines, but more sequence follows)",
                         hint=_REWRAP)


def _histogram(a: np.ndarray) -> np.ndarray:
    """np.bincount(a, minlength=256) for uint8, 2-3x faster: count byte pairs, then fold."""
    n = len(a) & ~1
    pairs = np.bincount(a[:n].view(np.uint16), minlength=1 << 16).reshape(256, 256)
    counts = pairs.sum(0) + pairs.sum(1)
    if n < len(a):
        counts[a[-1]] += 1
    return counts


# ---------------------------------------------------------------------------------------------
# the scan's result, cached by file size and mtime; complete-or-nothing file writes


def cached_path(path: Path, ext: str) -> Path:
    """The private cache's file `ext` for the FASTA at `path`."""
    return cache_dir() / "fasta" / (hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:24] + ext)


def scan(path: Path, bgzf: bool) -> dict:
    """The validated .fai rows, empty records, byte counts (and .gzi) of `path`, from the cache if fresh."""
    st = path.stat()
    key = {"version": _SCAN_VERSION, "path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    try:
        cached = json.loads(cached_path(path, ".json").read_text())
        if all(cached.get(k) == v for k, v in key.items()):
            if bgzf:
                cached["gzi"] = cached_path(path, ".scan.gzi").read_bytes()
            return cached
    except (OSError, ValueError):
        pass
    gzi: list[tuple[int, int]] = []
    scanner = _Scanner(path)
    scanner.run(_bgzf_chunks(path, gzi) if bgzf else _plain_chunks(path))
    result = key | {"records": scanner.records, "empty": scanner.empty, "counts": scanner.counts.tolist(),
                    "first_line": {str(k): v for k, v in scanner.first_line.items()}}
    if bgzf:
        result["gzi"] = struct.pack(f"<Q{2 * len(gzi)}Q", len(gzi), *(v for pair in gzi for v in pair))
    st2 = path.stat()
    if (st2.st_size, st2.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
        raise FastaError(f"{path}: the file changed while it was being read")
    try:  # the .json is written last: it marks the cache entry complete
        cached_path(path, ".json").parent.mkdir(parents=True, exist_ok=True)
        if bgzf:
            write_bytes(cached_path(path, ".scan.gzi"), result["gzi"])
        write_bytes(cached_path(path, ".json"), json.dumps({k: v for k, v in result.items() if k != "gzi"}).encode())
    except OSError as exc:  # a cache only (OutputError is an OSError too): go on without it
        log.debug("not caching the scan of %s: %s", path, exc)
    return result
