"""The alleles the reads show around called sites: what export writes once the model has called them.

`ReadAlleles.sites(contig, windows)` reads the BAM once per cluster of nearby windows and, for
each window [start, end), counts once per passing read (io.alignments' ReadFilters: flags, MAPQ;
a substituted base also needs base quality >= min_base_quality):
- a substituted base inside the window (an SNV);
- an insertion whose anchor (the aligned base before it) is inside the window, with its sequence;
- a deletion that overlaps the window, with its span.
Every indel is left-aligned (genoformer.normalise) before it is placed, so reads that put the same
insertion at different bases of a repeat (up to REACH bases right of the window) agree.
`reference_reads` counts the reads spanning the whole window with no allele in it (the REF
support of AD); `depth` the reads covering a base of it.
"""
from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pysam

from genoformer.errors import AlignmentError
from genoformer.io.alignments import ReadFilters
from genoformer.normalise import normalise_record, reference_fetcher

_M, _I, _D, _N, _S, _H, _P, _EQ, _X = range(9)
REACH = 100  # bases right of a window whose reads' indels are left-aligned onto it (a repeat that long)
CLUSTER_GAP = 500  # windows closer than this share one read of the BAM


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
    """What the reads show over one window of a contig."""
    alleles: Counter  # Allele -> reads showing it
    reference_reads: int  # reads spanning the window without any allele in it
    depth: int  # reads covering a base of the window


@dataclass(frozen=True)
class _Read:
    start: int  # reference bases [start, end) its alignment covers
    end: int
    alleles: tuple[Allele, ...]


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

    def sites(self, contig: str, windows: list[tuple[int, int]]) -> list[SiteReads]:
        """What the reads show over each window [start, end) (see the module docstring), in order given."""
        length = self.reference.contigs[contig]
        windows = [(max(s, 0), min(e, length)) for s, e in windows]
        out: list[SiteReads | None] = [None] * len(windows)
        order = sorted(range(len(windows)), key=lambda i: windows[i])
        cluster: list[int] = []
        cluster_end = 0  # the furthest end of the cluster's windows (kept, not recomputed: linear in windows)
        for i in order + [None]:
            if cluster and (i is None or windows[i][0] > cluster_end + CLUSTER_GAP):
                for j, site in zip(cluster, self._cluster(contig, [windows[j] for j in cluster])):
                    out[j] = site
                cluster = []
            if i is not None:
                cluster_end = max(cluster_end, windows[i][1]) if cluster else windows[i][1]
                cluster.append(i)
        return out

    def _cluster(self, contig: str, windows: list[tuple[int, int]]) -> list[SiteReads]:
        lo, hi = min(s for s, _ in windows), max(e for _, e in windows)
        reads = self._reads(contig, lo, hi, windows)
        starts = [r.start for r in reads]
        longest = max((r.end - r.start for r in reads), default=0)
        found = []
        for start, end in windows:
            alleles: Counter = Counter()
            reference_reads = depth = 0
            first = bisect.bisect_left(starts, start - longest)
            for r in reads[first:bisect.bisect_left(starts, end)]:
                if r.end <= start:
                    continue
                here = {a for a in r.alleles if a.span[0] < end and start < a.span[1]}
                alleles.update(here)
                depth += 1
                reference_reads += not here and r.start <= start and end <= r.end
            found.append(SiteReads(alleles, reference_reads, depth))
        return found

    def _reads(self, contig: str, lo: int, hi: int, windows: list[tuple[int, int]]) -> list[_Read]:
        """Passing reads over [lo, hi), sorted by start, with their alleles near the windows."""
        fetch = reference_fetcher(self.reference, contig)
        ref_lo = max(lo - REACH, 0)
        ref = np.frombuffer(fetch(ref_lo, hi + 2 * REACH).encode(), np.uint8)
        wanted = np.zeros(len(ref), bool)  # bases where a substitution counts
        for s, e in windows:
            wanted[s - ref_lo:e - ref_lo] = True
        mask, min_mapq = self.filters.flag_mask, self.filters.min_mapping_quality
        reads = []
        try:
            for read in self._bam.fetch(contig, lo, min(hi + REACH, ref_lo + len(ref))):
                if read.flag & mask or read.mapping_quality < min_mapq or read.cigartuples is None \
                        or read.query_sequence is None:
                    continue
                events = _events(read, ref_lo, ref, wanted, self.filters.min_base_quality)
                alleles = tuple(Allele(*_normalised(e, fetch)) for e in events)
                reads.append(_Read(read.reference_start, read.reference_end, alleles))
        except OSError as exc:
            raise AlignmentError(f"{self.path}: cannot read {contig}:{lo + 1:,}-{hi:,} ({exc})") from None
        reads.sort(key=lambda r: r.start)
        return reads


def _normalised(event: tuple[int, str, str], fetch) -> tuple[int, str, str]:
    pos, ref, alt = event
    if len(ref) == len(alt):
        return event
    pos, (ref, alt) = normalise_record(pos, (ref, alt), fetch)
    return pos, ref, alt


_ACGT = np.frombuffer(b"ACGT", np.uint8)


def _events(read, ref_lo: int, ref: np.ndarray, wanted: np.ndarray, min_bq: int) -> set[tuple[int, str, str]]:
    """(pos, REF, ALT) of one read: substitutions at `wanted` bases, every indel inside the fetched `ref`."""
    seq = np.frombuffer(read.query_sequence.encode(), np.uint8)
    quals = read.query_qualities
    quals = np.full(len(seq), 255) if quals is None else np.asarray(quals)
    rpos, qpos = read.reference_start, 0
    events = set()
    n = len(ref)
    for op, length in read.cigartuples:
        if op in (_M, _EQ, _X):
            a, b = max(rpos, ref_lo), min(rpos + length, ref_lo + n)
            if a < b:
                q = seq[qpos + a - rpos:qpos + b - rpos]
                r = ref[a - ref_lo:b - ref_lo]
                hit = (q != r) & wanted[a - ref_lo:b - ref_lo] & np.isin(q, _ACGT) & np.isin(r, _ACGT) \
                    & (quals[qpos + a - rpos:qpos + b - rpos] >= min_bq)
                for i in np.flatnonzero(hit):
                    events.add((a + int(i), chr(r[i]), chr(q[i])))
            rpos += length
            qpos += length
        elif op == _I:
            anchor = rpos - 1
            if ref_lo <= anchor < ref_lo + n and qpos > 0:
                base = chr(ref[anchor - ref_lo])
                events.add((anchor, base, base + read.query_sequence[qpos:qpos + length]))
            qpos += length
        elif op == _D:
            if rpos - 1 >= ref_lo and rpos + length - ref_lo <= n:
                deleted = ref[rpos - 1 - ref_lo:rpos + length - ref_lo].tobytes().decode()
                events.add((rpos - 1, deleted, deleted[0]))
            rpos += length
        elif op == _N:
            rpos += length
        elif op == _S:
            qpos += length
    return events
