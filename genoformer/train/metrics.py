"""Validation metrics of each task over a run's validation outputs (losses.forward_loss's tensors).

mlm and classify: accuracy over the scored targets (for 3-state secondary structure per residue,
also named q3); a per-base mlm (the decoder's masked bases) also bits per base, its cross-entropy in
bits as DNA language models publish it. variant: precision, recall and F1 on non-ref bases: a true
positive is a non-ref base called with its exact genotype. pattern: AUROC and AUPRC per class,
averaged over the classes that have both. The main metric of each task (tasks.py) picks the best
checkpoint.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from genoformer.data.datasets import IGNORE_INDEX


def metrics(task: str, outputs: list[dict]) -> dict[str, float]:
    """Validation metrics over the batches' outputs (see the module docstring)."""
    if task == "pattern":
        scores = torch.cat([o["logits"] for o in outputs]).cpu().numpy()
        truth = torch.cat([o["target"] for o in outputs]).cpu().numpy() > 0.5
        per_class = [(auroc(truth[:, c], scores[:, c]), average_precision(truth[:, c], scores[:, c]))
                     for c in range(scores.shape[1])]
        return {"auroc": _nanmean([a for a, _ in per_class]), "auprc": _nanmean([p for _, p in per_class])}
    pred = torch.cat([o["logits"].argmax(-1).flatten() for o in outputs]).cpu()
    target = torch.cat([o["target"].flatten() for o in outputs]).cpu()
    scored = target != IGNORE_INDEX
    pred, target = pred[scored], target[scored]
    if task in ("mlm", "classify"):
        accuracy = float((pred == target).float().mean()) if target.numel() else math.nan
        if task == "mlm" and outputs[0].get("per_base"):
            logits = torch.cat([o["logits"].flatten(0, 1) for o in outputs]).cpu()[scored]
            nats = float(F.cross_entropy(logits.float(), target)) if target.numel() else math.nan
            return {"accuracy": accuracy, "bits_per_base": nats / math.log(2)}
        per_residue = task == "classify" and outputs[0]["target"].dim() == 2
        q3 = {"q3": accuracy} if per_residue and outputs[0]["logits"].shape[-1] == 3 else {}
        return {"accuracy": accuracy} | q3
    tp = int(((target != 0) & (pred == target)).sum())
    fp = int(((pred != 0) & (pred != target)).sum())
    fn = int(((target != 0) & (pred != target)).sum())
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / (tp + fn) if tp + fn else math.nan
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
    return {"precision": precision, "recall": recall, "f1": f1}


def auroc(truth: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with tied ranks averaged); NaN without both classes."""
    n_pos, n_neg = int(truth.sum()), int((~truth).sum())
    if not n_pos or not n_neg:
        return math.nan
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[truth].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(truth: np.ndarray, scores: np.ndarray) -> float:
    """Area under the precision-recall curve as the mean precision at each positive; NaN without positives."""
    n_pos = int(truth.sum())
    if not n_pos:
        return math.nan
    hits = truth[np.argsort(-scores, kind="stable")]
    precision_at = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(precision_at[hits].sum() / n_pos)


def _nanmean(values: list[float]) -> float:
    kept = [v for v in values if not math.isnan(v)]
    return float(np.mean(kept)) if kept else math.nan
