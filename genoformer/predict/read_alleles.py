"""The alleles the reads show around a called site: what export writes once the model has called it.

`ReadAlleles.around(contig, start, end)` walks the CIGAR of every passing read (io.alignments'
ReadFilters: flags, MAPQ; a substituted base also needs base quality >= min_base_quality) that
overlaps the stretch and counts, once per read:
- a substituted base inside the stretch (an SNV);
- an insertion whose anchor (the aligned base before it) is inside the stretch, with its sequence;
- a deletion that overlaps the stretch, with its span.
Every indel is left-aligned (genoformer.normalise) before it is placed, so reads that put the same
insertion at different bases of a repeat (up to REACH bases right of the stretch) agree. `reference_reads` counts the reads that
span the whole stretch with no allele in it: the REF support of AD.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pysam

from genoformer.errors import AlignmentError
from genoformer.io.alignments import ReadFilters
from genoformer.normalise import normalise_record, reference_fetcher

_M, _I, _D, _N, _S, _H, _P, _EQ, _X = range(9)
REACH = 100  # bases right of a site whose reads' indels are left-aligned onto it (a repeat that long)


@dataclass(frozen=True, order=True)
class Allele:
    """One alt allele as a normalised biallelic VCF record: 0-based `pos`, REF, ALT."""
    pos: int
    ref: str
    alt: str

    @property
    def kind(self) -> str:
        if len(self.ref) == len(self.alt):
            return "snv"
        return "insertion" if len(self.alt) > len(self.ref) else "deletion"

    @property
    def span(self) -> tuple[int, int]:
        """Reference bases it touches: the substituted or deleted bases, an insertion's anchor."""
        if self.kind == "deletion":
            return self.pos + 1, self.pos + len(self.ref)
        if self.kind == "insertion":
            return self.pos, self.pos + 1
        return self.pos, self.pos + len(self.ref)


@dataclass
class SiteReads:
    """What the reads show over [start, end) of a contig."""
    alleles: Counter  # Allele -> reads showing it
    reference_reads: int  # reads spanning the stretch without any allele in it
    depth: int  # reads overlapping the stretch


class ReadAlleles:
    """Read alleles of a BAM/CRAM against `reference` (a genoformer Reference); opened once."""

    def __init__(self, path: str | Path, reference, filters: ReadFilters = ReadFilters()):
        self.path, self.reference, self.filters = Path(path), reference, filters
        try:
            self._bam = pysam.AlignmentFile(str(self.path), reference_filename=str(reference.path))
        except (OSError, ValueError) as exc:
            raise AlignmentError(f"{self.path}: cannot open as BAM/CRAM ({exc})",
                                 hint="give the BAM the predictions were made from (--bam)") from None

    def close(self) -> None:
        self._bam.close()

    def __enter__(self) -> ReadAlleles:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _fetch(self, contig: str):
        return reference_fetcher(self.reference, contig)

    def around(self, contig: str, start: int, end: int) -> SiteReads:
        """The alleles of reads over [start, end) (see the module docstring)."""
        fetch = self._fetch(contig)
        start, end = max(start, 0), min(end, self.reference.contigs[contig])
        lo = max(start - REACH, 0)
        ref = fetch(lo, end + 2 * REACH)
        alleles: Counter = Counter()
        reference_reads = depth = 0
        mask, min_mapq, min_bq = self.filters.flag_mask, self.filters.min_mapping_quality, self.filters.min_base_quality
        try:
            for read in self._bam.fetch(contig, start, min(end + REACH, len(ref) + lo)):
                if read.flag & mask or read.mapping_quality < min_mapq or read.cigartuples is None:
                    continue
                covers, seen = _read_alleles(read, start, end, lo, ref, min_bq)
                found = set()
                for pos, r, a in seen:
                    if len(r) != len(a):
                        pos, (r, a) = normalise_record(pos, (r, a), fetch)
                    allele = Allele(pos, r, a)
                    if allele.span[0] < end and start < allele.span[1]:
                        found.add(allele)
                alleles.update(found)
                depth += covers
                spans = read.reference_start <= start and end <= read.reference_end
                reference_reads += spans and not found
        except OSError as exc:
            raise AlignmentError(f"{self.path}: cannot read {contig}:{start + 1:,}-{end:,} ({exc})") from None
        return SiteReads(alleles, reference_reads, depth)


def _read_alleles(read, start: int, end: int, lo: int, ref: str, min_bq: int) -> tuple[bool, set]:
    """(whether the read covers a base of [start, end), its (pos, REF, ALT) events: substitutions inside
    [start, end), every indel inside the fetched reference `ref` (from `lo`))."""
    seq, quals = read.query_sequence, read.query_qualities
    if seq is None:
        return False, set()
    rpos, qpos = read.reference_start, 0
    covers = False
    events = set()
    for op, n in read.cigartuples:
        if op in (_M, _EQ, _X):
            a, b = max(rpos, start), min(rpos + n, end)
            if a < b:
                covers = True
                for p in range(a, b):
                    base = seq[qpos + p - rpos]
                    if base != ref[p - lo] and base in "ACGT" and ref[p - lo] in "ACGT" and \
                            (quals is None or quals[qpos + p - rpos] >= min_bq):
                        events.add((p, ref[p - lo], base))
            rpos += n
            qpos += n
        elif op == _I:
            anchor = rpos - 1
            if lo <= anchor < lo + len(ref) and qpos > 0:
                events.add((anchor, ref[anchor - lo], ref[anchor - lo] + seq[qpos:qpos + n]))
            qpos += n
        elif op == _D:
            covers |= rpos < end and start < rpos + n
            if rpos - 1 >= lo and rpos + n - lo <= len(ref):
                events.add((rpos - 1, ref[rpos - 1 - lo:rpos + n - lo], ref[rpos - 1 - lo]))
            rpos += n
        elif op == _N:
            rpos += n
        elif op == _S:
            qpos += n
    return covers, events
