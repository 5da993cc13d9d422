"""Build tiny BAMs and broken copies of real ones on demand, so no binary fixture is committed.

Every function writes to the `dst` path it is given (a pytest tmp_path) and returns it.
Corruptions follow RELIABILITY.md §2.2 / §6: `head -c` truncation, EOF-block removal, byte flips.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pysam

# The 28-byte empty BGZF block that ends every complete BAM (SAM spec §4.1.2).
BGZF_EOF = bytes.fromhex("1f8b08040000000000ff0600424302001b0003000000000000000000")


@dataclass
class Read:
    """One alignment for `write_bam`; `start` is 0-based, `cigar` a SAM CIGAR string."""
    name: str
    contig: str
    start: int
    cigar: str
    seq: str
    qual: int | list[int] = 30
    mapq: int = 60
    flag: int = 0


def write_bam(dst: Path, contigs: dict[str, int], reads: list[Read], *,
              sort_order: str | None = "coordinate", index: bool = True) -> Path:
    """Write `reads` (in the given order) under a header listing `contigs`; index it if asked."""
    hd = {"VN": "1.6"} | ({"SO": sort_order} if sort_order else {})
    header = pysam.AlignmentHeader.from_dict(
        {"HD": hd, "SQ": [{"SN": n, "LN": ln} for n, ln in contigs.items()]})
    with pysam.AlignmentFile(str(dst), "wb", header=header) as out:
        for r in reads:
            a = pysam.AlignedSegment(header)
            a.query_name = r.name
            a.flag = r.flag
            a.reference_name = r.contig
            a.reference_start = r.start
            a.mapping_quality = r.mapq
            a.cigarstring = r.cigar
            a.query_sequence = r.seq
            a.query_qualities = pysam.qualitystring_to_array(
                "".join(chr(q + 33) for q in (r.qual if isinstance(r.qual, list) else [r.qual] * len(r.seq))))
            out.write(a)
    if index:
        pysam.index(str(dst))
    return Path(dst)


def _copy_index(src: Path, dst: Path) -> None:
    for suffix in (".bai", ".csi"):
        if Path(str(src) + suffix).exists():
            shutil.copyfile(str(src) + suffix, str(dst) + suffix)


def rewrite_header(src: Path, dst: Path, *, rename: dict[str, str] | None = None,
                   lengths: dict[str, int] | None = None) -> Path:
    """Copy `src` with contigs renamed (e.g. chr20 -> 20) and/or lengths changed, then index it.

    Contig order is kept so every record's reference id stays valid under the new header.
    """
    rename, lengths = rename or {}, lengths or {}
    with pysam.AlignmentFile(str(src)) as bam:
        d = bam.header.to_dict()
        for sq in d["SQ"]:
            sq["LN"] = lengths.get(sq["SN"], sq["LN"])
            sq["SN"] = rename.get(sq["SN"], sq["SN"])
        header = pysam.AlignmentHeader.from_dict(d)
        with pysam.AlignmentFile(str(dst), "wb", header=header) as out:
            for read in bam.fetch(until_eof=True):
                out.write(read)
    pysam.index(str(dst))
    return Path(dst)


def truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    """`head -c` the BAM to `fraction` of its size (cuts mid-block, so no EOF block); keep the index."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: int(len(data) * fraction)])
    _copy_index(src, dst)
    return Path(dst)


def strip_eof(src: Path, dst: Path) -> Path:
    """Drop only the final 28-byte BGZF EOF block: all records intact, but the file looks truncated."""
    data = Path(src).read_bytes()
    assert data.endswith(BGZF_EOF), f"{src} does not end with a BGZF EOF block"
    Path(dst).write_bytes(data[: -len(BGZF_EOF)])
    _copy_index(src, dst)
    return Path(dst)


def flip_bytes(src: Path, dst: Path, *, at: float = 0.5, n: int = 64) -> Path:
    """Invert `n` bytes starting at `at` (fraction of the size) inside the compressed data; keep the index."""
    data = bytearray(Path(src).read_bytes())
    offset = int(len(data) * at)
    for i in range(offset, min(offset + n, len(data))):
        data[i] ^= 0xFF
    Path(dst).write_bytes(bytes(data))
    _copy_index(src, dst)
    return Path(dst)


def without_index(src: Path, dst: Path) -> Path:
    """Copy the BAM alone."""
    shutil.copyfile(src, dst)
    return Path(dst)


def shuffled(src: Path, dst: Path, *, n: int = 5_000, seed: int = 0) -> Path:
    """The first `n` reads of `src` in random order under a header saying SO:coordinate, with the index of
    the same reads sorted (htslib cannot index an unsorted file, so a wrong header is how one gets through)."""
    import random

    with pysam.AlignmentFile(str(src)) as bam:
        header = bam.header.to_dict()
        reads = [r for _, r in zip(range(n), bam.fetch(until_eof=True))]
    header["HD"] = {"VN": "1.6", "SO": "coordinate"}
    sorted_copy = Path(dst).with_name(Path(dst).stem + ".sorted.bam")
    for path, order in ((sorted_copy, reads), (dst, random.Random(seed).sample(reads, len(reads)))):
        with pysam.AlignmentFile(str(path), "wb", header=pysam.AlignmentHeader.from_dict(header)) as out:
            for read in order:
                out.write(read)
    pysam.index(str(sorted_copy))
    shutil.copyfile(f"{sorted_copy}.bai", f"{dst}.bai")
    return Path(dst)


def with_index_of(src: Path, other: Path, dst: Path) -> Path:
    """A copy of `src` next to the index of another BAM (`other`, itself indexed)."""
    shutil.copyfile(src, dst)
    shutil.copyfile(f"{other}.bai", f"{dst}.bai")
    return Path(dst)


def every_nth_read(src: Path, dst: Path, n: int = 3) -> Path:
    """A smaller BAM on the same header: every `n`th read of `src`, indexed."""
    with pysam.AlignmentFile(str(src)) as bam, pysam.AlignmentFile(str(dst), "wb", template=bam) as out:
        for i, read in enumerate(bam.fetch(until_eof=True)):
            if i % n == 0:
                out.write(read)
    pysam.index(str(dst))
    return Path(dst)
