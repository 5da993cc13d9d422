"""Normalised variant records: parsimonious and left-aligned, as `bcftools norm -f REF` leaves them.

Tan, Abecasis & Kang (2015): a record is normalised when it is parsimonious (no base that every
allele shares can be trimmed, keeping one base in each allele) and left-aligned (shifting it one
base left would change it). `normalise_record` applies their algorithm to all alleles of a record
together (REF first): while every allele ends with the same base, that base is trimmed; when an
allele becomes empty, every allele gets the reference base before them (POS moves left); then
bases shared at the start are trimmed while every allele keeps two or more. A record at the start
of a contig cannot move further left and keeps its trailing bases.

`fetch(start, end)` gives the upper-cased reference bases [start, end) of the record's contig.
Export writes its records through this; evaluate compares alleles left-aligned the same way.
"""
from __future__ import annotations

from collections.abc import Callable

Fetch = Callable[[int, int], str]
_LOOK_BACK = 64  # reference bases fetched at a time while an indel slides left


def normalise_record(pos: int, alleles: tuple[str, ...] | list[str], fetch: Fetch) -> tuple[int, tuple[str, ...]]:
    """(0-based POS, alleles) of the normalised record; `alleles` are REF then the ALTs."""
    alleles = [a.upper() for a in alleles]
    before, before_start = "", pos  # reference bases [before_start, pos) fetched so far
    while True:
        changed = False
        if all(alleles) and len({a[-1] for a in alleles}) == 1 and not all(len(a) == 1 for a in alleles):
            alleles = [a[:-1] for a in alleles]
            changed = True
        if not all(alleles):
            if pos == 0:  # nothing to the left: undo the trim, the trailing base stays
                break
            if before_start == pos:
                before_start = max(pos - _LOOK_BACK, 0)
                before = fetch(before_start, pos)
            base, before = before[-1], before[:-1]
            pos -= 1
            before_start = min(before_start, pos)
            alleles = [base + a for a in alleles]
            changed = True
        if not changed:
            break
    if not all(alleles):  # the record starts the contig: keep the base after it
        alleles = [a + fetch(pos + len(alleles[0]), pos + len(alleles[0]) + 1) for a in alleles]
    while all(len(a) >= 2 for a in alleles) and len({a[0] for a in alleles}) == 1:
        alleles = [a[1:] for a in alleles]
        pos += 1
    return pos, tuple(alleles)


def reference_fetcher(reference, contig: str):
    """fetch(start, end): the upper-cased bases of `contig`, the interval clipped to the contig."""
    length = reference.contigs[contig]

    def fetch(start: int, end: int) -> str:
        start, end = min(max(start, 0), length), min(max(end, 0), length)
        return reference.fetch(contig, start, end).tobytes().decode().upper()
    return fetch
