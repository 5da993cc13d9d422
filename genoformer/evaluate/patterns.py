"""Pattern predictions against annotation tracks: AUROC and AUPRC per class over covered bases.

Truth per base comes from BED/GFF/GTF/UCSC tracks (genoformer.io.tracks.Tracks) or from the
reference's soft-masking (class "soft_masked"). A prediction class is scored against the truth
class of the same name; a file with one class and truth with one class are paired whatever
their names. Only covered bases (inside `regions`, when given) are scored.

The file stores probabilities as float16, so they take at most 2^16 values: the metrics are
computed exactly from per-class counts of positives and negatives at each float16 value,
streamed a block at a time, so memory does not grow with the genome. AUROC is the Mann-Whitney
statistic with tied scores counted half (as genoformer.train.metrics.auroc); AUPRC is average precision
with one step per distinct score (ties enter together, as in scikit-learn's
average_precision_score).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field

import numpy as np

from genoformer import __version__
from genoformer.errors import InputError, UsageError
from genoformer.evaluate.variants import json_safe, format_ratio
from genoformer.interrupt import raise_if_terminated
from genoformer.io.predictions import open_predictions
from genoformer.tasks import SOFT_MASKED

BLOCK = 1 << 20  # bases read at a time
_BINS = 1 << 16  # one per float16 bit pattern; for values >= 0 pattern order is value order


@dataclass
class PatternEvaluateConfig:
    """What `evaluate --predictions` scores; saved in the JSON report."""
    predictions: str
    tracks: list[str] = field(default_factory=list)  # BED / GFF3 / GTF / UCSC .txt files
    feature_types: list[str] | None = None  # GFF/GTF feature types to keep (default: all)
    soft_mask: bool = False  # truth class "soft_masked" from the reference's lower-case bases
    reference: str | None = None  # for soft_mask; default: the reference recorded in the file
    regions: list[str] = field(default_factory=list)  # samtools-style, 1-based; default: all covered bases


def auroc_from_counts(pos: np.ndarray, neg: np.ndarray) -> float:
    """AUROC from counts of positives and negatives per score bin (bins in ascending score order)."""
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    if not n_pos or not n_neg:
        return math.nan
    neg_below = np.cumsum(neg) - neg
    return float((pos * (neg_below + neg / 2)).sum() / (n_pos * n_neg))


def average_precision_from_counts(pos: np.ndarray, neg: np.ndarray) -> float:
    """Average precision from per-bin counts (bins ascending): precision at each distinct threshold."""
    n_pos = int(pos.sum())
    if not n_pos:
        return math.nan
    keep = (pos + neg) > 0
    tp = np.cumsum(pos[keep][::-1])
    fp = np.cumsum(neg[keep][::-1])
    precision = tp / (tp + fp)
    recall_step = pos[keep][::-1] / n_pos
    return float((precision * recall_step).sum())


@dataclass
class ClassScore:
    name: str
    truth: str
    bases: int
    positives: int
    auroc: float
    auprc: float

    def as_dict(self) -> dict:
        return dataclasses.asdict(self) | {"prevalence": self.positives / self.bases if self.bases else math.nan}


@dataclass
class PatternResult:
    config: PatternEvaluateConfig
    classes: list[ClassScore]

    def to_json(self) -> str:
        doc = {"genoformer_version": __version__, "config": dataclasses.asdict(self.config),
               "classes": {c.name: c.as_dict() for c in self.classes}}
        return json.dumps(json_safe(doc), indent=2) + "\n"

    def table(self) -> str:
        width = max([5] + [len(c.name) for c in self.classes]) + 2
        rows = [f"{'class':<{width}}{'bases':>12}{'positive':>10}{'AUROC':>8}{'AUPRC':>8}  truth"]
        for c in self.classes:
            share = f"{100 * c.positives / c.bases:.2f}%" if c.bases else "-"
            rows.append(f"{c.name:<{width}}{c.bases:>12,}{share:>10}{format_ratio(c.auroc):>8}"
                        f"{format_ratio(c.auprc):>8}  {c.truth}")
        return "\n".join(rows)


def _pairs(predicted: list[str], truth: list[str]) -> list[tuple[int, int]]:
    """(prediction column, truth column) pairs: same names, else one class each."""
    pairs = [(i, truth.index(name)) for i, name in enumerate(predicted) if name in truth]
    if pairs:
        return pairs
    if len(predicted) == 1 and len(truth) == 1:
        return [(0, 0)]
    raise UsageError(f"no truth class matches a predicted class (predicted: {', '.join(predicted)}; "
                     f"truth: {', '.join(truth) or 'none'})",
                     hint="name BED files after the classes (CpG.bed for class CpG), or pick GFF types "
                          "with --feature-type")


def evaluate_pattern(config: PatternEvaluateConfig) -> PatternResult:
    """Stream the covered bases of the file and score each paired class (see the module docstring)."""
    if not config.tracks and not config.soft_mask:
        raise UsageError("give truth tracks (--truth-bed / --truth-gff) or --truth-soft-mask")
    with open_predictions(config.predictions) as preds:
        tracks = None
        truth_names: list[str] = []
        if config.tracks:
            from genoformer.io.tracks import Tracks

            tracks = Tracks.from_files(config.tracks, preds.contigs, config.feature_types)
            truth_names += tracks.class_names
        reference = None
        if config.soft_mask:
            reference = _reference(config, preds)
            truth_names.append(SOFT_MASKED)
        pairs = _pairs(preds.classes, truth_names)
        pos = np.zeros((len(pairs), _BINS), dtype=np.int64)
        neg = np.zeros((len(pairs), _BINS), dtype=np.int64)
        for iv in preds.covered_blocks(config.regions, BLOCK):
            raise_if_terminated()
            p = preds.read(iv)
            if not p.covered.any():
                continue
            truth = np.zeros((len(iv), 0), dtype=bool)
            if tracks is not None:
                truth = tracks.mask(iv.contig, iv.start, iv.end)
            if reference is not None:
                lower = reference.fetch(iv.contig, iv.start, iv.end) >= ord("a")
                truth = np.concatenate([truth, lower[:, None]], axis=1)
            covered = p.covered
            for k, (pi, ti) in enumerate(pairs):
                bins = p.probs[covered, pi].astype(np.float16).view(np.uint16)
                hit = truth[covered, ti]
                pos[k] += np.bincount(bins[hit], minlength=_BINS)
                neg[k] += np.bincount(bins[~hit], minlength=_BINS)
        scores = [ClassScore(preds.classes[pi], truth_names[ti], int(pos[k].sum() + neg[k].sum()), int(pos[k].sum()),
                             auroc_from_counts(pos[k], neg[k]), average_precision_from_counts(pos[k], neg[k]))
                  for k, (pi, ti) in enumerate(pairs)]
    if not any(s.bases for s in scores):
        raise InputError(f"{config.predictions}: no covered bases to score"
                         + (" in the regions given" if config.regions else ""))
    return PatternResult(config, scores)


def _reference(config: PatternEvaluateConfig, preds):
    from genoformer.io.fasta import Reference

    path = config.reference or preds.attrs.get("reference")
    if not path:
        raise UsageError(f"{preds.path}: records no reference; give --reference for --truth-soft-mask")
    reference = Reference(path)
    differ = [c for c in preds.contigs if reference.contigs.get(c) != preds.contigs[c]]
    if differ:
        raise InputError(f"{reference.path}: is not the reference of {preds.path}: contig {differ[0]} "
                         f"is {reference.contigs.get(differ[0], 'missing')} bp there, {preds.contigs[differ[0]]:,} "
                         "in the predictions", hint="give the reference the predictions were made on")
    return reference
