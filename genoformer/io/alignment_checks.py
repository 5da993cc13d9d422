"""Checks of a BAM/CRAM that htslib leaves to warnings or reports as a corrupt file.

Run once when `Alignments` opens a file (a few ms: the first reads, the index, a few seeks),
each with its own message (AlignmentError, exit 3):

- `check_sorted_start`: the first SORT_CHECK reads are in coordinate order (a shuffled or
  name-sorted file whose header says SO:coordinate reads as garbage through an index, and htslib
  cannot tell);
- `check_index`: the index is not older than the file (htslib only warns, and pysam is silenced),
  and its offsets point at BGZF blocks of this file (an index of another BAM sends fetch to
  arbitrary bytes: htslib reports "truncated file" or returns the wrong reads);
- `check_cram_reference`: each @SQ M5 of a CRAM equals the md5 of the reference contig, as
  decoding against another reference fails per slice with an MD5 error seen as "truncated file".
"""
from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pysam

from genoformer.errors import AlignmentError

SORT_CHECK = 10_000  # reads read from the start of the file to check its order
OFFSETS_CHECKED = 128  # index offsets whose BGZF block is looked at
_BGZF_MAGIC = b"\x1f\x8b\x08\x04"


def find_index(path: Path, cram: bool) -> Path | None:
    """The index htslib would load next to `path` (as `samtools index` names it), if any."""
    suffixes = (".crai",) if cram else (".csi", ".bai")
    for suffix in suffixes:
        for candidate in (Path(f"{path}{suffix}"), path.with_suffix(suffix)):
            if candidate.is_file():
                return candidate
    return None


def check_sorted_start(bam: pysam.AlignmentFile, path: Path) -> None:
    """AlignmentError when the first SORT_CHECK reads of `bam` (a fresh handle) are out of coordinate order."""
    claimed = bam.header.to_dict().get("HD", {}).get("SO")
    claim = "although its header says SO:coordinate" if claimed == "coordinate" else "(its header names no order)"
    previous = (-1, -1, "")
    for n, read in enumerate(bam.fetch(until_eof=True)):
        if n >= SORT_CHECK or read.reference_id < 0:  # unmapped reads without a position come last
            return
        here = (read.reference_id, read.reference_start, read.query_name)
        if here[:2] < previous[:2]:
            raise AlignmentError(
                f"{path}: not coordinate-sorted {claim}: read {here[2]} at "
                f"{read.reference_name}:{here[1] + 1:,} comes after {previous[2]} at "
                f"{bam.get_reference_name(previous[0])}:{previous[1] + 1:,}",
                hint=f"samtools sort -o sorted.bam {path} && samtools index sorted.bam")
        previous = here


def check_index(path: Path, index: Path) -> None:
    """AlignmentError when `index` is older than `path`, or does not describe `path`'s blocks."""
    data_mtime, index_mtime = int(path.stat().st_mtime), int(index.stat().st_mtime)
    if index_mtime < data_mtime:  # whole seconds, as htslib compares them
        raise AlignmentError(f"{path}: its index {index.name} is older than the file, so it may not describe it",
                             hint=f"rebuild it: samtools index {path} (or `touch {index}` if the file is "
                                  "unchanged since it was indexed)")
    try:
        if index.suffix == ".crai":
            offsets = _crai_offsets(index)
        else:
            offsets = _bai_csi_offsets(index.read_bytes())
    except (OSError, EOFError, ValueError, struct.error, zlib.error) as e:
        raise AlignmentError(f"{path}: its index {index.name} cannot be read ({e})",
                             hint=f"rebuild it: samtools index {path}") from None
    bad = _misplaced(path, offsets, bgzf=index.suffix != ".crai")
    if bad is not None:
        raise AlignmentError(f"{path}: its index {index.name} was not built for this file ({bad})",
                             hint=f"rebuild it: samtools index {path}")


def check_cram_reference(bam: pysam.AlignmentFile, path: Path, reference) -> None:
    """AlignmentError when a CRAM's @SQ M5 differs from the md5 of the same contig of `reference`."""
    from genoformer.io.checksums import contig_md5s

    declared = {sq["SN"]: str(sq["M5"]).lower() for sq in bam.header.to_dict().get("SQ", [])
                if "M5" in sq and sq["SN"] in reference.contigs}
    actual = contig_md5s(reference, list(declared))
    for contig, md5 in declared.items():
        if actual[contig] != md5:
            raise AlignmentError(f"{path}: CRAM was written against another reference than {reference.path}: "
                                 f"{contig} has M5 {md5} in the CRAM header, {actual[contig]} in the FASTA",
                                 hint="decode it with the FASTA it was written with (its @SQ UR tag may name it)")


# -- reading indexes -----------------------------------------------------------------------------


def _bai_csi_offsets(raw: bytes) -> np.ndarray:
    """Every virtual file offset in a .bai or .csi (chunk bounds, linear index), uint64."""
    if raw[:2] == b"\x1f\x8b":  # .csi is BGZF-compressed
        raw = gzip.decompress(raw)
    magic = raw[:4]
    if magic == b"BAI\x01":
        pos, pseudo, csi = 4, 37450, False
    elif magic == b"CSI\x01":
        _min_shift, depth, l_aux = struct.unpack_from("<3i", raw, 4)
        pos, pseudo, csi = 16 + l_aux, ((1 << 3 * (depth + 1)) - 1) // 7 + 1, True
    else:
        raise ValueError(f"not a BAI or CSI index (magic {magic!r})")
    (n_ref,) = struct.unpack_from("<i", raw, pos)
    pos += 4
    found = []
    for _ in range(n_ref):
        (n_bin,) = struct.unpack_from("<i", raw, pos)
        pos += 4
        for _ in range(n_bin):
            if csi:
                bin_id, loffset, n_chunk = struct.unpack_from("<IQi", raw, pos)
                pos += 16
            else:
                bin_id, n_chunk = struct.unpack_from("<Ii", raw, pos)
                pos += 8
            if bin_id != pseudo:  # the pseudo-bin holds read counts, not offsets
                found.append(np.frombuffer(raw, "<u8", 2 * n_chunk, pos))
            pos += 16 * n_chunk
        if not csi:
            (n_intv,) = struct.unpack_from("<i", raw, pos)
            found.append(np.frombuffer(raw, "<u8", n_intv, pos + 4))
            pos += 4 + 8 * n_intv
    return np.unique(np.concatenate(found)) if found else np.zeros(0, np.uint64)


def _crai_offsets(index: Path) -> np.ndarray:
    """Container byte offsets of a .crai (gzipped text: one slice per line, column 4 its container)."""
    with gzip.open(index, "rt") as fh:
        offsets = [int(line.split("\t")[3]) for line in fh if line.strip()]
    return np.unique(np.array(offsets, dtype=np.uint64) << np.uint64(16))


def _misplaced(path: Path, offsets: np.ndarray, bgzf: bool) -> str | None:
    """What is wrong with the first bad one of a sample of `offsets` (virtual: block << 16 | within), or None."""
    if not len(offsets):
        return None
    size = os.path.getsize(path)
    picks = offsets[np.unique(np.linspace(0, len(offsets) - 1, min(OFFSETS_CHECKED, len(offsets))).astype(int))]
    with open(path, "rb") as fh:
        for voffset in picks.tolist():
            block, within = voffset >> 16, voffset & 0xFFFF
            if block > size or (block == size and within):
                return f"it points at byte {block:,} of a {size:,}-byte file"
            if not bgzf or block == size:
                continue
            fh.seek(block)
            header = fh.read(18)
            if header[:4] != _BGZF_MAGIC or header[12:14] != b"BC":
                return f"byte {block:,} where it points is not the start of a BGZF block"
            (bsize,) = struct.unpack_from("<H", header, 16)
            fh.seek(block + bsize + 1 - 4)
            (isize,) = struct.unpack("<I", fh.read(4))
            if within > isize:
                return f"it points {within:,} bytes into a BGZF block of {isize:,}"
    return None
