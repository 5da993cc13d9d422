"""The labels a run learns from, counted before it trains: per class, on the training regions and on the
validation windows.

A variant run whose truth holds no het/hom-alt base there (every record filtered, outside the
confident regions, without a genotype) learns "hom_ref everywhere", validates to recall NaN and
exits 0; a pattern run whose tracks cover no base learns nothing either. Both are refused up front
(InputError, exit 3) naming the file and why its records gave no positive.
"""
from __future__ import annotations

import logging
from collections import Counter

import numpy as np

from genoformer.coords import Interval
from genoformer.errors import TrackError, VariantError
from genoformer.interrupt import raise_if_terminated
from genoformer.io.variant_classes import VARIANT_CLASSES, variant_class
from genoformer.tokenize import soft_mask

log = logging.getLogger(__name__)

CHUNK = 1 << 20  # bases read at a time


def where(intervals: list[Interval]) -> str:
    """The first few intervals as samtools-style regions, for messages."""
    shown = ", ".join(iv.to_region() for iv in intervals[:3])
    return shown + (f" and {len(intervals) - 3} more" if len(intervals) > 3 else "")


def _chunks(intervals: list[Interval], chunk: int = CHUNK):
    for iv in intervals:
        for start in range(iv.start, iv.end, chunk):
            raise_if_terminated()
            yield Interval(iv.contig, start, min(start + chunk, iv.end))


def class_counts(variants, intervals: list[Interval], confident: list[Interval] | None,
                    chunk: int = CHUNK) -> list[int]:
    """Scored bases of each VARIANT_CLASSES class inside `intervals`, as the loss sees them."""
    by_contig: dict[str, list[Interval]] = {}
    for iv in sorted(confident or [], key=lambda iv: (iv.contig, iv.start)):
        by_contig.setdefault(iv.contig, []).append(iv)
    counts = np.zeros(len(VARIANT_CLASSES), dtype=np.int64)
    for part in _chunks(intervals, chunk):
        near = None if confident is None else \
            [c for c in by_contig.get(part.contig, []) if c.start < part.end and part.start < c.end]
        labels = variants.labels(part.contig, part.start, part.end, near)
        classes = variant_class(labels.genotype[labels.mask], labels.variant_type[labels.mask])
        counts += np.bincount(classes, minlength=len(VARIANT_CLASSES))
    return [int(c) for c in counts]


def check_variant_labels(variants, confident: list[Interval] | None, confident_path: str | None,
                         splits: dict[str, list[Interval]]) -> dict[str, list[int]]:
    """Scored bases per VARIANT_CLASSES class of each split ("training regions", "validation windows":
    intervals); VariantError when a split has no het or hom_alt base."""
    counts = {}
    for split, intervals in splits.items():
        counts[split] = class_counts(variants, intervals, confident)
        if not sum(counts[split][1:]):
            raise VariantError(f"{variants.path}: no het or hom_alt base to learn from in the {split} "
                               f"({where(intervals)}): {_why_no_variants(variants, intervals, confident, confident_path)}",
                               hint="labels are PASS (or '.') records with a called non-ref GT inside --confident-bed; "
                                    "check the FILTER column, the sample's GT and the regions")
    return counts


def _why_no_variants(variants, intervals: list[Interval], confident: list[Interval] | None,
                     confident_path: str | None) -> str:
    """What became of the VCF's records in `intervals`, as a phrase."""
    reasons: Counter = Counter()
    seen = set()
    for iv in intervals:
        for v in variants.records(iv.contig, iv.start, iv.end):
            if (v.contig, v.start, v.ref, v.alts) in seen or v.start < iv.start:
                continue
            seen.add((v.contig, v.start, v.ref, v.alts))
            spans = v.spans() if v.genotype is not None else []
            if not v.passed:
                reasons["fail FILTER"] += 1
            elif v.genotype is None:
                reasons["have no genotype (./.)"] += 1
            elif v.genotype == 0:
                reasons["are hom_ref (0/0)"] += 1
            elif not spans:
                reasons["place no base (symbolic or breakend alleles)"] += 1
            elif confident is not None and not any(c.contig == v.contig and c.start <= s and e <= c.end
                                                   for s, e, _ in spans for c in confident):
                reasons[f"lie outside the confident regions ({confident_path})"] += 1
            else:
                reasons["are variants"] += 1
    if not seen:
        return "the VCF has no records there"
    text = f"of its {len(seen):,} records there, " + ", ".join(f"{n:,} {why}" for why, n in reasons.most_common())
    if reasons["fail FILTER"]:
        text += f" (FILTER {', '.join(f'{name} {n:,}' for name, n in _failed_filters(variants, intervals))})"
    return text


def _failed_filters(variants, intervals: list[Interval]) -> list[tuple[str, int]]:
    """The most common FILTER values of the records that fail it, read with pysam."""
    import pysam

    names: Counter = Counter()
    with pysam.VariantFile(str(variants.path)) as vcf:
        for iv in intervals:
            if iv.contig in vcf.header.contigs:
                names.update(name for rec in vcf.fetch(iv.contig, iv.start, iv.end) if rec.start >= iv.start
                             for name in rec.filter if name != "PASS")
    return names.most_common(3)


def check_track_labels(class_names: list[str], ref, tracks, splits: dict[str, list[Interval]],
                       source: str) -> dict[str, list[int]]:
    """Bases of each class in each split; TrackError when no class covers a base of a split.

    `tracks` None: the class is the reference's soft-masked (lowercase) bases.
    """
    counts = {}
    for split, intervals in splits.items():
        n = np.zeros(len(class_names), dtype=np.int64)
        for part in _chunks(intervals):
            if tracks is None:
                n[0] += int(soft_mask(ref.fetch(part.contig, part.start, part.end)).sum())
            else:
                n += tracks.mask(part.contig, part.start, part.end).sum(axis=0)
        counts[split] = [int(c) for c in n]
        if not n.any():
            raise TrackError(f"{source}: no base of any class ({', '.join(class_names)}) in the {split} "
                             f"({where(intervals)}), so there is nothing to learn or score",
                             hint="choose regions the tracks cover (genoformer info --bed FILE --region R)")
    return counts


def log_counts(class_names: list[str], counts: dict[str, list[int]], splits: dict[str, list[Interval]],
               per_base: bool) -> None:
    """One line per split: bases of each class (variant: scored bases; pattern: share of the split's bases)."""
    for split, n in counts.items():
        total = sum(len(iv) for iv in splits[split])
        shown = ", ".join(f"{name} {c:,}" if not per_base else f"{name} {c / max(total, 1):.1%}"
                          for name, c in zip(class_names, n))
        log.info("labels, %s (%s): %s%s", split, where(splits[split]), shown,
                 " scored bases" if not per_base else f" of {total:,} bases")
        if per_base:
            for name, c in zip(class_names, n):
                if not c:
                    log.warning("class %s covers no base of the %s: it is not learned or scored there", name, split)
