"""Reference FASTA (plain or bgzip; DNA or protein) over pyfaidx, validated before it is trusted.

pyfaidx and htslib get several malformed files silently wrong (RELIABILITY.md §2.1: CR-only
line endings lose contigs, whitespace comes back as bases, duplicates keep the first, a stale
.fai returns the next header as sequence).  So `Reference` first scans the whole file once
(fasta_scan), in binary, a chunk at a time with numpy, and builds the .fai (and, for bgzip, the
.gzi) itself.  An existing index is used only if it equals the scan's; a missing one is written
beside the FASTA (atomically: genoformer.outputs) or, where that folder is read-only or the index
there is stale, in a private cache ($XDG_CACHE_HOME/genoformer, else ~/.cache/genoformer).
The scan's result is cached there too, keyed by file size and mtime, so a 3 GB genome is
scanned once, not on every open.

Policy for empty records (`>a` directly followed by `>b`, A8): warn, exclude the contig from
`.contigs` and list it in `.empty_contigs`; `strict=True` makes it an error instead.
"""
from __future__ import annotations

import logging
import operator
import os
import warnings
from pathlib import Path

import numpy as np
import pyfaidx

from genoformer.coords import Interval, check_interval, parse_region
from genoformer.errors import FastaError, OutputError, RegionError, UsageError
from genoformer.io import fasta_scan
from genoformer.io.fasta_scan import cache_dir
from genoformer.io.sources import LazyHandle
from genoformer.outputs import write_bytes

__all__ = ["ALPHABETS", "Reference", "cache_dir"]

log = logging.getLogger(__name__)

ALPHABETS = ("dna", "protein", "any")
_DNA = b"ACGTUNRYKMSWBDHV"  # bases, U and the IUPAC ambiguity codes
_DNA_OK = set(_DNA + _DNA.lower())
_PROTEIN_OK = set(bytes(range(65, 91)) + bytes(range(97, 123)) + b"*-.")  # letters, stop, gaps
_ACGTN = set(b"ACGTNacgtn")


# ---------------------------------------------------------------------------------------------
# the alphabet check and index files


def _check_alphabet(path: Path, scan: dict, alphabet: str) -> None:
    if alphabet == "any":
        return
    counts = np.asarray(scan["counts"])
    counts[[10, 13]] = 0
    total = int(counts.sum())
    allowed = _DNA_OK if alphabet == "dna" else _PROTEIN_OK
    bad = [v for v in np.flatnonzero(counts).tolist() if v not in allowed]
    acgtn = int(counts[list(_ACGTN)].sum())
    if alphabet == "dna" and bad:
        v = min(bad, key=lambda b: scan["first_line"][str(b)])
        where = f"{chr(v)!r} at line {scan['first_line'][str(v)]}"
        if any(chr(b).isalpha() for b in bad) and acgtn < 0.75 * total:  # proteins are ~25% ACGTN
            raise FastaError(f"{path}: alphabet looks like protein ({100 * (1 - acgtn / total):.1f}% of residues "
                             f"are not ACGTN; first {where}), expected DNA",
                             hint="open protein FASTA with alphabet='protein' (--alphabet protein)")
        raise FastaError(f"{path}: {where} is not a DNA base or IUPAC code ({int(counts[bad].sum()):,} such characters)",
                         hint="gaps ('-', '.'), stops ('*') and digits are not allowed in a DNA reference")
    if alphabet == "protein":
        if bad:
            v = min(bad, key=lambda b: scan["first_line"][str(b)])
            raise FastaError(f"{path}: {chr(v)!r} at line {scan['first_line'][str(v)]} is not an amino-acid "
                             "code, stop ('*') or gap ('-', '.')")
        dna_like = acgtn + int(counts[[ord("U"), ord("u")]].sum())
        if total and dna_like >= 0.9 * total:
            raise FastaError(f"{path}: alphabet looks like DNA ({100 * dna_like / total:.1f}% of residues are "
                             "ACGTUN), expected protein", hint="open DNA FASTA with alphabet='dna'")



def _fai_rows(data: bytes) -> list[tuple]:
    """Non-empty rows of a .fai (pyfaidx lists empty records, htslib leaves them out)."""
    rows = [tuple(line.split(b"\t")) for line in data.splitlines() if line]
    return [r for r in rows if len(r) < 2 or r[1] != b"0"]


def _place_index(fasta: Path, suffix: str, data: bytes, same) -> Path:
    """Path of an index file whose content is `data`: the one beside the FASTA, else a private copy."""
    beside = Path(f"{fasta}{suffix}")
    private = fasta_scan.cached_path(fasta, suffix)
    try:
        if same(beside.read_bytes(), data):
            return beside
        log.warning("%s does not match %s (stale, or built for another file); using a private index %s",
                    beside, fasta, private)
    except FileNotFoundError:
        try:
            return write_bytes(beside, data)
        except OSError as exc:  # a read-only or shared folder (OutputError is an OSError too)
            log.info("%s; using a private index %s", exc, private)
    except OSError as exc:
        log.warning("cannot read %s (%s); using a private index %s", beside, exc.strerror or exc, private)
    try:
        if not (private.is_file() and private.read_bytes() == data):
            private.parent.mkdir(parents=True, exist_ok=True)
            write_bytes(private, data)
    except OSError as exc:
        raise OutputError(f"{fasta}: cannot write its {suffix} index beside it or in {private.parent} "
                          f"({exc.strerror or exc})", hint="set XDG_CACHE_HOME to a writable folder") from None
    return private


# ---------------------------------------------------------------------------------------------


class Reference(LazyHandle):
    """A validated reference FASTA; `fetch` returns ASCII codes as stored (soft-mask case, N, IUPAC kept).

    Coordinates are 0-based, half-open, and must lie inside the contig (RegionError otherwise,
    never clipping).  The pyfaidx handle opens on first use and again in any other process, and
    pickling drops it, so each DataLoader worker reads through its own.  As a per-base source
    (genoformer.io.sources), a padding base reads as N.
    """
    pad_value = ord("N")

    def __init__(self, path: str | os.PathLike, *, alphabet: str = "dna", strict: bool = False):
        if alphabet not in ALPHABETS:
            raise UsageError(f"unknown alphabet {alphabet!r}; use one of {', '.join(ALPHABETS)}")
        self.path = Path(path)
        self.alphabet = alphabet
        bgzf = fasta_scan.sniff(self.path)
        scan = fasta_scan.scan(self.path, bgzf)
        _check_alphabet(self.path, scan, alphabet)
        self.empty_contigs: list[str] = [name for name, _ in scan["empty"]]
        if scan["empty"]:
            listed = ", ".join(f"{n!r} (line {line})" for n, line in scan["empty"][:5])
            if strict or not scan["records"]:
                raise FastaError(f"{self.path}: records without sequence: {listed}",
                                 hint="remove the empty records")
            log.warning("%s: excluding %d records without sequence: %s", self.path, len(scan["empty"]), listed)
        self.contigs: dict[str, int] = {r[0]: r[1] for r in scan["records"]}
        fai = "".join("\t".join(map(str, r)) + "\n" for r in scan["records"]).encode()
        self.index_path = _place_index(self.path, ".fai", fai, lambda old, new: _fai_rows(old) == _fai_rows(new))
        self.gzi_path = _place_index(self.path, ".gzi", scan["gzi"], bytes.__eq__) if bgzf else None

    def __repr__(self) -> str:
        return f"Reference({str(self.path)!r}, alphabet={self.alphabet!r}, contigs={len(self.contigs)})"

    def _new_handle(self) -> pyfaidx.Faidx:
        with warnings.catch_warnings():  # pyfaidx warns on index mtimes; their content was checked
            warnings.simplefilter("ignore", RuntimeWarning)
            return pyfaidx.Faidx(str(self.path), indexname=str(self.index_path),
                                 gzi_indexname=str(self.gzi_path) if self.gzi_path else None,
                                 as_raw=True, strict_bounds=True, rebuild=False, build_index=False)

    def region(self, text: str) -> Interval:
        """Parse a samtools-style region string against this reference."""
        return parse_region(text, self.contigs, source=str(self.path))

    def fetch(self, contig: str, start: int, end: int) -> np.ndarray:
        """uint8 ASCII codes of bases [start, end) of `contig` (0-based, half-open)."""
        if contig in self.empty_contigs:
            raise RegionError(f"{self.path}: contig {contig!r} has no sequence (an empty record, excluded)")
        start, end = operator.index(start), operator.index(end)  # ints (numpy too), never floats
        check_interval(contig, start, end, self.contigs, source=str(self.path))
        if start == end:
            return np.zeros(0, np.uint8)
        seq = self._open().fetch(contig, start + 1, end)
        if len(seq) != end - start:
            raise FastaError(f"{self.path}: read {len(seq)} bases of {contig}:{start + 1}-{end}; "
                             "did the file change after it was opened?")
        return np.frombuffer(bytearray(seq, "ascii"), np.uint8)

    def fetch_interval(self, interval: Interval) -> np.ndarray:
        return self.fetch(interval.contig, interval.start, interval.end)

    def per_base(self, interval: Interval) -> np.ndarray:
        """uint8 [len(interval)]: the per-base source contract, `fetch_interval`."""
        return self.fetch_interval(interval)
