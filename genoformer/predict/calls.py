"""From per-base class probabilities (io.variant_classes) to normalised VCF records.

1. Called bases: covered bases whose most likely class is not hom_ref, or whose P(non-ref) >=
   threshold. Each gets the variant type with the largest summed probability.
2. Events: a run of consecutive deletion bases is one event (the deleted bases); every other called
   base is one (an SNV at it, or an insertion after it). Its probabilities are the mean over its bases.
3. Alleles: the reads around the event (predict.read_alleles, indels left-aligned) pick the
   allele: the most frequent one of the called type that touches the event (the substituted
   base; a deleted span or an inserted sequence within NEAR bases of it, as the model's bases may
   be off by one); when the reads show none of that type, the most frequent allele of any type
   touching the event's own bases. Only alleles with MIN_READS reads and MIN_FRACTION of the
   site's reads count: a call whose reads show none is not written (a call bleeding onto the base
   beside a variant would otherwise write that base's sequencing errors). A hom_alt call whose reads
   also show a second allele of the same type (at least SECOND_ALLELE of the first one's reads) at the
   same site is multi-allelic: one record with both ALTs, GT 1/2. Only of the same type: the class
   says both haplotypes carry that type, and an allele of another type would be one the model did not
   call (on NA12878, misaligned reads' substitutions at a homopolymer insertion's anchor made 1/2
   records of an insertion and an SNV no base was called for).
   The genotype and the record's probabilities are the mean over the bases the first allele's labels
   sit on (Allele.span: the substituted or deleted bases, an insertion's anchor), not over the event:
   a model whose call bleeds onto the base beside a deletion (its anchor, where the reads' deletions
   start) gives that base a het-looking mixture, and averaging it in called hom deletions het.
4. Records: REF spans every allele's bases, checked against the reference; the record is
   normalised as `bcftools norm -f REF` would leave it (genoformer.normalise). Several events
   that give a record at the same position are one record (the one with the larger QUAL).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genoformer.coords import runs
from genoformer.io.variant_classes import HET_CLASSES, HOM_CLASSES, type_probabilities
from genoformer.normalise import normalise_record
from genoformer.predict.read_alleles import Allele, SiteReads

TYPES = ("none", "snv", "insertion", "deletion")
NEAR = 2  # bases around an event where the reads' alleles count for it
MIN_READS = 2  # an allele needs this many reads
MIN_FRACTION = 0.15  # and this share of the reads over the site (sequencing errors rarely reach it)
SECOND_ALLELE = 0.3


@dataclass
class Event:
    """Bases [start, end) of a contig the model calls, of one variant type."""
    start: int
    end: int
    kind: str  # snv, insertion, deletion
    near: np.ndarray  # [n, n_classes]: the probabilities of the bases of window(event) inside the piece
    near_start: int  # the position of near[0]

    @property
    def probs(self) -> np.ndarray:
        """[n_classes]: the mean class probabilities of its bases."""
        return self.near[self.start - self.near_start:self.end - self.near_start].mean(0)

    def probs_over(self, start: int, end: int) -> np.ndarray:
        """The mean class probabilities of bases [start, end) (those inside `near`); `probs` when none is."""
        lo, hi = max(start - self.near_start, 0), min(end - self.near_start, len(self.near))
        return self.near[lo:hi].mean(0) if hi > lo else self.probs


@dataclass
class Record:
    contig: str
    pos: int  # 0-based
    alleles: tuple[str, ...]  # REF, ALTs
    gt: tuple[int, int]
    probs: np.ndarray  # class probabilities behind the call
    depth: int
    allele_depths: tuple[int, ...]  # REF, then each ALT

    @property
    def p_hom_ref(self) -> float:
        return float(self.probs[0])

    @property
    def p_genotype(self) -> float:
        """P(the called genotype): het for 0/1, hom_alt for 1/1 and 1/2."""
        return float(self.probs[HOM_CLASSES if self.gt[0] else HET_CLASSES].sum())


def called_bases(probs: np.ndarray, covered: np.ndarray, threshold: float) -> np.ndarray:
    """bool [n]: covered bases called non-ref (see the module docstring)."""
    at = np.flatnonzero(covered)  # only these: files predicted over a region are mostly uncovered
    p = probs[at]
    called = np.zeros(len(covered), dtype=bool)
    called[at] = (p.argmax(1) != 0) | (1 - p[:, 0] >= threshold)
    return called


def base_types(probs: np.ndarray) -> np.ndarray:
    """int [n]: the variant type (1 snv, 2 insertion, 3 deletion) of largest summed probability."""
    return type_probabilities(probs)[:, 1:].argmax(1) + 1


def events(start: int, probs: np.ndarray, covered: np.ndarray, threshold: float) -> list[Event]:
    """The events of bases [start, start + len(probs)) (see the module docstring), by position."""
    called = called_bases(probs, covered, threshold)
    if not called.any():
        return []
    types = np.where(called, base_types(probs), 0)
    spans = [(int(s), int(e), "deletion") for s, e in zip(*runs(types == 3))]
    spans += [(int(i), int(i) + 1, TYPES[types[i]]) for i in np.flatnonzero((types == 1) | (types == 2))]
    found = []
    for s, e, kind in spans:
        lo, hi = max(s - NEAR, 0), e + NEAR
        found.append(Event(start + s, start + e, kind, probs[lo:hi], start + lo))
    return sorted(found, key=lambda ev: ev.start)


def ends_in_deletion(probs: np.ndarray, covered: np.ndarray, threshold: float) -> np.ndarray:
    """bool [n]: called deletion bases (a block of bases is cut so that no run of them crosses it)."""
    return called_bases(probs, covered, threshold) & (base_types(probs) == 3)


def window(event: Event) -> tuple[int, int]:
    """The bases whose reads' alleles count for `event`."""
    return event.start - NEAR, event.end + NEAR


def record_of(contig: str, event: Event, site: SiteReads, fetch) -> Record | None:
    """The record the reads over `window(event)` give it (see the module docstring); None when they show
    no allele."""
    if not site.alleles:
        return None
    least = max(MIN_READS, MIN_FRACTION * site.depth)
    ranked = sorted((a for a in site.alleles if site.alleles[a] >= least), key=lambda a: (-site.alleles[a], a))
    margin = 0 if event.kind == "snv" else NEAR
    same_kind = [a for a in ranked if a.kind == event.kind and _overlaps(a, event, margin)]
    first = (same_kind or [a for a in ranked if _overlaps(a, event, 0)] or [None])[0]
    if first is None:
        return None
    chosen = [first]
    probs = event.probs_over(*first.span)
    hom = probs[HOM_CLASSES].sum() > probs[HET_CLASSES].sum()
    if hom:
        lo, hi = first.span
        for other in ranked:
            if other != first and other.kind == first.kind and other.span[0] <= hi and lo <= other.span[1] and \
                    site.alleles[other] >= SECOND_ALLELE * site.alleles[first]:
                chosen.append(other)
                break
    gt = (1, 2) if len(chosen) == 2 else (1, 1) if hom else (0, 1)
    pos, alleles = _joined(chosen, fetch)
    pos, alleles = normalise_record(pos, alleles, fetch)
    depths = (site.reference_reads, *(site.alleles[a] for a in chosen))
    return Record(contig, pos, alleles, gt, probs, site.depth, depths)


def _overlaps(allele: Allele, event: Event, margin: int) -> bool:
    return allele.span[0] < event.end + margin and event.start - margin < allele.span[1]


def _joined(chosen: list[Allele], fetch) -> tuple[int, tuple[str, ...]]:
    """One record holding every allele of `chosen`: REF spans all their reference bases."""
    start = min(a.pos for a in chosen)
    end = max(a.pos + len(a.ref) for a in chosen)
    ref = fetch(start, end)
    alts = tuple(ref[:a.pos - start] + a.alt + ref[a.pos - start + len(a.ref):] for a in chosen)
    return start, (ref, *alts)

