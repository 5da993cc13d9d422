"""Write valid and malformed FASTA files on demand, so no broken fixture is committed.

The malformed variants follow RELIABILITY.md §2.1 and §3 A.  Each `MALFORMED` function writes
one file into the folder it is given and returns a `Malformed`: the path, the 1-based line of
the fault (None when the fault is the whole file) and a regex the error message should match.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pysam

IUPAC = "RYKMSWBDHV"


def toy_records(seed: int = 0) -> dict[str, str]:
    """A small genome with a soft-masked run, an N run and IUPAC codes; every record has 1 or >= 3 lines at width 60."""
    rng = np.random.default_rng(seed)

    def bases(n: int) -> str:
        return "".join(rng.choice(list("ACGT"), n))

    chr1 = bases(100) + bases(40).lower() + "N" * 50 + bases(60)  # 250 bp: 4 full lines + 10
    chr2 = bases(90) + "".join(rng.choice(list(IUPAC), 20)) + bases(71)  # 181 bp: 3 full lines + 1
    return {"chr1": chr1, "chr2": chr2, "chrM": bases(60)}  # chrM: exactly one line


def format_fasta(records: dict[str, str] | list[tuple[str, str]], width: int = 60, newline: str = "\n") -> bytes:
    items = records.items() if isinstance(records, dict) else records
    out = []
    for name, seq in items:
        out.append(f">{name}")
        out.extend(seq[i:i + width] for i in range(0, len(seq), width))
    return (newline.join(out) + newline).encode()


def write_fasta(path: Path, records: dict[str, str] | list[tuple[str, str]], width: int = 60,
                newline: str = "\n", bgzip: bool = False) -> Path:
    """Write `records` wrapped at `width`; with `bgzip`, `path` is the .gz written by htslib's bgzip."""
    path = Path(path)
    if not bgzip:
        path.write_bytes(format_fasta(records, width, newline))
        return path
    plain = path.with_name(path.name.removesuffix(".gz") + ".plain")
    plain.write_bytes(format_fasta(records, width, newline))
    pysam.tabix_compress(str(plain), str(path), force=True)
    plain.unlink()
    return path


def sequence_lines(records: dict[str, str], width: int = 60) -> list[tuple[int, str, int, int]]:
    """(1-based line, contig, index of the line in its record, number of lines in the record) per sequence line."""
    rows, line = [], 0
    for name, seq in records.items():
        line += 1  # the header
        n = -(-len(seq) // width)
        rows.extend((line + i + 1, name, i, n) for i in range(n))
        line += n
    return rows


def mutate_line(data: bytes, line: int, kind: str) -> bytes:
    """Perturb 1-based `line`: "short" (drop a base), "long" (add one), "blank", "tab", "space", "cr" (CR-only end)."""
    lines = data.split(b"\n")
    text = lines[line - 1]
    mid = len(text) // 2
    lines[line - 1] = {"short": text[:-1], "long": text + text[-1:], "blank": b"",
                       "tab": text[:mid] + b"\t" + text[mid:], "space": text[:mid] + b" " + text[mid:],
                       "cr": text}[kind]
    if kind == "cr":
        return b"\n".join(lines[:line]) + b"\r" + b"\n".join(lines[line:])
    return b"\n".join(lines)


@dataclass
class Malformed:
    path: Path
    line: int | None
    match: str


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = Path(folder) / name
    path.write_bytes(data)
    return path


def empty_file(folder: Path) -> Malformed:
    return Malformed(_write(folder, "empty.fa", b""), None, r"empty file \(0 bytes\)")


def only_blank_lines(folder: Path) -> Malformed:
    return Malformed(_write(folder, "blank.fa", b"\n\n\n"), None, r"no FASTA records")


def no_header(folder: Path) -> Malformed:
    return Malformed(_write(folder, "noheader.fa", b"\nACGTACGT\n>chr1\nACGT\n"), 2, r"text before the first '>'")


def comment_line(folder: Path) -> Malformed:
    return Malformed(_write(folder, "comment.fa", b"# made by hand\n>chr1\nACGT\n"), 1, r"text before the first '>'")


def duplicate_names(folder: Path) -> Malformed:
    data = b">chr1 first\nACGT\n>chr2\nGGGG\n>chr1 second\nTTTT\n"
    return Malformed(_write(folder, "dups.fa", data), 5, r"duplicate contig names: 'chr1' \(lines 1 and 5\)")


def short_line(folder: Path) -> Malformed:
    data = b">chr1\nACGTACGT\nACGTACG\nACGTACGT\nACG\n"
    return Malformed(_write(folder, "short.fa", data), 3, r"inconsistent line length in 'chr1'")


def long_line(folder: Path) -> Malformed:
    data = b">chr1\nACGTACGT\nACGTACGT\nACGTACGTA\nACG\n"
    return Malformed(_write(folder, "long.fa", data), 4, r"inconsistent line length in 'chr1'")


def blank_line_inside(folder: Path) -> Malformed:
    data = b">chr1\nACGTACGT\n\nACGTACGT\n>chr2\nACGT\n"
    return Malformed(_write(folder, "blankinside.fa", data), 3, r"blank line inside record 'chr1'")


def cr_only(folder: Path) -> Malformed:
    data = b">chr1\rACGTACGT\rACGT\r>chr2\rGGGG\r"
    return Malformed(_write(folder, "cr.fa", data), 1, r"carriage return not followed by a newline")


def mixed_line_endings(folder: Path) -> Malformed:
    data = b">chr1\nACGTACGT\r\nACGTACGT\nACG\n"
    return Malformed(_write(folder, "mixed.fa", data), 3, r"mixed LF and CRLF")


def tab_in_sequence(folder: Path) -> Malformed:
    data = b">chr1\nACGTACGT\nACG\tTACGT\nACG\n"
    return Malformed(_write(folder, "tab.fa", data), 3, r"a tab inside a sequence line")


def space_in_sequence(folder: Path) -> Malformed:
    data = b">chr1\nACGTACGT \nACGTACGT\nACG\n"
    return Malformed(_write(folder, "space.fa", data), 2, r"a space inside a sequence line")


def plain_gzip(folder: Path) -> Malformed:
    path = Path(folder) / "plain.fa.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(format_fasta(toy_records()))
    return Malformed(path, None, r"plain gzip, not bgzip")


def binary(folder: Path) -> Malformed:
    data = np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    return Malformed(_write(folder, "binary.fa", b">chr1\n" + data), None, r"binary data")


def bam_as_fasta(folder: Path) -> Malformed:
    """A real BGZF file whose content is a BAM, named like a FASTA."""
    path = Path(folder) / "reads.fa.gz"
    header = pysam.AlignmentHeader.from_dict({"SQ": [{"SN": "chr1", "LN": 100}]})
    with pysam.AlignmentFile(str(path), "wb", header=header):
        pass
    return Malformed(path, None, r"a BAM file \(aligned reads\), not a FASTA reference")


def bam_given_as_reference(folder: Path) -> Malformed:
    """A BAM under its own name (reads.bam) given as the reference: what it is, not "rename it to .gz"."""
    path = Path(folder) / "reads.bam"
    header = pysam.AlignmentHeader.from_dict({"SQ": [{"SN": "chr1", "LN": 100}]})
    with pysam.AlignmentFile(str(path), "wb", header=header):
        pass
    return Malformed(path, None, r"a BAM file \(aligned reads\), not a FASTA reference")


def empty_header(folder: Path) -> Malformed:
    return Malformed(_write(folder, "emptyname.fa", b">chr1\nACGT\n>\nACGT\n"), 3, r"empty sequence name")


def protein_as_dna(folder: Path) -> Malformed:
    data = b">p1 a protein\nMKTAYIAKQRQISFVKSHFSRQ\n>p2\nMEEPQSDPSVEPPLSQETF\n"
    return Malformed(_write(folder, "protein.fa", data), 2, r"alphabet looks like protein")


def gap_in_dna(folder: Path) -> Malformed:
    return Malformed(_write(folder, "gap.fa", b">chr1\nACGT\nAC-T\n"), 3, r"'-' at line 3 is not a DNA base")


def x_in_dna(folder: Path) -> Malformed:
    """An 'X' mask in otherwise plain DNA: not a base, but no reason to call it protein."""
    return Malformed(_write(folder, "x.fa", b">chr1\nACGTACGT\nACXXXCGT\nAC\n"), 3, r"'X' at line 3 is not a DNA base")


MALFORMED = {f.__name__: f for f in (
    empty_file, only_blank_lines, no_header, comment_line, duplicate_names, short_line, long_line,
    blank_line_inside, cr_only, mixed_line_endings, tab_in_sequence, space_in_sequence, plain_gzip,
    binary, bam_as_fasta, bam_given_as_reference, empty_header, protein_as_dna, gap_in_dna, x_in_dna)}


def empty_records(folder: Path) -> Path:
    """`a` (middle) and `c` (last) have no sequence; `b` and `d` do (RELIABILITY.md A8)."""
    return _write(folder, "emptyrec.fa", b">a\n>b\nACGTACGT\nACG\n>d\nGGGG\n>c\n")
