"""The score-variants baseline: logistic regression on the bases of a window, predicting motif bases.

It learns the pattern model's target from the same data: whether each base of the training contigs
lies in an interval of motifs.bed (the N positions of a CTCF core included, as the BED interval is):
- L2 logistic regression (logistic.py) on the one-hot bases of a +-HALF_WINDOW window around the
  base (31 positions x 6 symbols: A, C, G, T, any other letter, and "outside the contig"); the
  window covers the whole of a 14-base CTCF core from any of its bases;
- fitted on every motif base and a seeded random MAX_FIT_BACKGROUND of the others (for time: a
  full-batch step over all ~400,000 training bases takes about a second on a shared core). Dropping
  background bases raises the fitted odds of a motif by 1 / (fraction kept), so the motif logit is
  lowered by that factor's log afterwards (the case-control correction): probabilities then
  estimate those of a fit on every base, which the diffs below are made of;
- the penalty is chosen on the last VALIDATION_CONTIGS training contigs, left out of the fit (mean
  cross-entropy over all their bases), never on the scored held-out contigs.
An SNV is scored as `score-variants` scores a per-base model: diff = p_alt - p_ref of the motif class
at the variant base, p_ref from its reference window and p_alt from the same window with the ALT
base at its centre.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from logistic import OneHotLogistic, SymbolWindows, fit_onehot_logistic

BASES = "ACGT"
SYMBOLS = SymbolWindows(BASES)
OTHER, OUTSIDE, N_SYMBOLS = SYMBOLS.other, SYMBOLS.outside, SYMBOLS.n_symbols
HALF_WINDOW = 15
L2_GRID = (1e-5, 1e-4, 1e-3, 1e-2)
MAX_FIT_BACKGROUND = 100_000
VALIDATION_CONTIGS = 2
MOTIF = 1  # the class index of "in a motif"

base_codes = SYMBOLS.codes


def windows(sequence: str, half: int = HALF_WINDOW) -> np.ndarray:
    """int [L, 2*half+1]: the symbol codes of each base's window, OUTSIDE past either contig end."""
    return SYMBOLS.windows(sequence, half)


def motif_bases(motifs_bed: Path, lengths: dict[str, int]) -> dict[str, np.ndarray]:
    """bool [length] per contig of `lengths`: the bases inside a motifs.bed interval (0-based half-open)."""
    inside = {name: np.zeros(n, bool) for name, n in lengths.items()}
    for line in Path(motifs_bed).read_text().splitlines():
        contig, start, end = line.split("\t")[:3]
        if contig in inside:
            inside[contig][int(start):int(end)] = True
    return inside


def contig_data(reference: Path, motifs_bed: Path, contigs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(windows [N, 2*HALF_WINDOW+1], in-motif labels [N] as 0/1) of every base of `contigs`."""
    import pysam

    with pysam.FastaFile(str(reference)) as fa:
        seqs = {name: fa.fetch(name) for name in contigs}
    inside = motif_bases(motifs_bed, {name: len(s) for name, s in seqs.items()})
    return (np.concatenate([windows(seqs[n]) for n in contigs]),
            np.concatenate([inside[n] for n in contigs]).astype(np.int64))


@dataclass
class WindowMotifModel:
    l2: float
    model: OneHotLogistic  # motif logit already corrected for the background bases left out of the fit
    grid: list[dict]  # every penalty's validation cross-entropy
    fit_bases: int
    background_kept: float  # the fraction of background bases the fit saw

    def motif_probability(self, codes: np.ndarray) -> np.ndarray:
        scores = self.model.scores(codes)
        return 1 / (1 + np.exp(scores[:, 1 - MOTIF] - scores[:, MOTIF]))

    def diff(self, codes: np.ndarray, alt: np.ndarray) -> np.ndarray:
        """p_alt - p_ref of the motif class at each window's centre base, ALT (base codes [N]) substituted there."""
        alternate = codes.copy()
        alternate[:, codes.shape[1] // 2] = alt
        return self.motif_probability(alternate) - self.motif_probability(codes)


def cross_entropy(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-12, 1 - 1e-12)
    return float(-np.mean(np.where(y == MOTIF, np.log(p), np.log1p(-p))))


def fit_motif_model(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                    l2_grid: tuple[float, ...] = L2_GRID, max_background: int = MAX_FIT_BACKGROUND,
                    seed: int = 0) -> WindowMotifModel:
    """Fit every penalty on `train` (windows, 0/1 labels), keep the lowest validation cross-entropy."""
    codes, y = train
    background = np.flatnonzero(y != MOTIF)
    if len(background) > max_background:
        background = np.random.default_rng(seed).choice(background, size=max_background, replace=False)
    pick = np.sort(np.concatenate([np.flatnonzero(y == MOTIF), background]))
    kept = len(background) / max(int((y != MOTIF).sum()), 1)
    fits = []
    for l2 in l2_grid:
        model = fit_onehot_logistic(codes[pick], N_SYMBOLS, y[pick], l2, n_classes=2)
        model.bias[MOTIF] += float(np.log(kept))
        fitted = WindowMotifModel(l2, model, [], len(pick), kept)
        fits.append(({"l2": l2, "val_cross_entropy": cross_entropy(fitted.motif_probability(val[0]), val[1])},
                     fitted))
    best, fitted = min(fits, key=lambda f: f[0]["val_cross_entropy"])
    fitted.grid = [f[0] for f in fits]
    return fitted


def score_snvs(model: WindowMotifModel, reference: Path, variants: list[tuple]) -> np.ndarray:
    """The diff of each SNV (contig, 0-based position, ref, alt, ...), in order."""
    import pysam

    with pysam.FastaFile(str(reference)) as fa:
        seqs = {c: fa.fetch(c) for c in {v[0] for v in variants}}
    per_contig = {c: windows(s) for c, s in seqs.items()}
    codes = np.stack([per_contig[c][p] for c, p, *_ in variants])
    return model.diff(codes, base_codes("".join(v[3] for v in variants)))
