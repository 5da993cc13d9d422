"""The pattern baseline for CpG islands: logistic regression on window GC fraction and CpG observed/expected.

Features of a base: over the `window` bases centred on it (bases [i - window//2, i - window//2 +
window), shifted inward at the sequence ends so that it keeps its size), the GC fraction (C + G) / n and the CpG observed/expected ratio
n(CG) * n / (n(C) * n(G)) of Gardiner-Garden & Frommer (1987), 0 where the window has no C or no
G; n counts the A/C/G/T bases and n(CG) the CG pairs wholly inside the window. `choose_and_fit`
fits a logistic regression (logistic.py) for each window size on the training bases and keeps the
best average precision on the validation bases (ties: the smaller window).

Scores are scored as `genoformer evaluate` scores predictions: probabilities rounded to float16,
AUROC and average precision from counts per distinct value (ties counted together).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from logistic import Logistic, fit_logistic

from genoformer.evaluate.patterns import auroc_from_counts, average_precision_from_counts

WINDOWS = (51, 101, 201, 501, 1001, 2001)
L2 = 1e-4


def gc_cpg_features(sequence: bytes, window: int) -> np.ndarray:
    """float [L, 2]: GC fraction and CpG observed/expected of the window around each base."""
    s = np.frombuffer(sequence.upper(), np.uint8)
    def cumulative(hit: np.ndarray) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(hit)])
    c, g = cumulative(s == ord("C")), cumulative(s == ord("G"))
    n = cumulative(np.isin(s, np.frombuffer(b"ACGT", np.uint8)))
    cg = cumulative((s[:-1] == ord("C")) & (s[1:] == ord("G")))  # cg[j]: CG pairs starting before j
    lo = np.clip(np.arange(s.size) - window // 2, 0, max(s.size - window, 0))
    hi = np.minimum(lo + window, s.size)
    n_c, n_g, n_all = c[hi] - c[lo], g[hi] - g[lo], n[hi] - n[lo]
    n_cg = cg[hi - 1] - cg[lo]  # pairs starting in [lo, hi - 1): a pair starting at hi - 1 ends outside
    gc = np.where(n_all > 0, (n_c + n_g) / np.maximum(n_all, 1), 0.0)
    obs_exp = np.where(n_c * n_g > 0, n_cg * n_all / np.maximum(n_c * n_g, 1), 0.0)
    return np.stack([gc, obs_exp], axis=1)


def score(truth: np.ndarray, probabilities: np.ndarray) -> tuple[float, float]:
    """(AUROC, average precision) of float16-rounded probabilities, ties counted together."""
    values, inverse = np.unique(probabilities.astype(np.float16), return_inverse=True)
    pos = np.bincount(inverse[truth], minlength=values.size)
    neg = np.bincount(inverse[~truth], minlength=values.size)
    return auroc_from_counts(pos, neg), average_precision_from_counts(pos, neg)


@dataclass
class CpgChoice:
    window: int
    model: Logistic
    grid: list[dict]  # every window's validation AUROC and AUPRC

    def probabilities(self, piece: Piece) -> np.ndarray:
        """P(island) of the piece's kept bases."""
        scores = self.model.scores(gc_cpg_features(piece.sequence, self.window)[piece.keep])
        return 1 / (1 + np.exp(-(scores[:, 1] - scores[:, 0])))


@dataclass
class Piece:
    """A region's bases with context on either side: `keep` picks the region, `truth` is its island mask."""
    sequence: bytes
    keep: slice
    truth: np.ndarray


def choose_and_fit(train: list[Piece], val: Piece, windows: tuple[int, ...] = WINDOWS) -> CpgChoice:
    """See the module docstring."""
    fits = []
    y = np.concatenate([p.truth for p in train]).astype(np.int64)
    for window in windows:
        X = np.concatenate([gc_cpg_features(p.sequence, window)[p.keep] for p in train])
        choice = CpgChoice(window, fit_logistic(X, y, L2, n_classes=2), [])
        auroc, auprc = score(val.truth, choice.probabilities(val))
        fits.append(({"window": window, "val_auroc": auroc, "val_auprc": auprc}, choice))
    best, choice = max(fits, key=lambda f: (f[0]["val_auprc"], -f[0]["window"]))
    choice.grid = [f[0] for f in fits]
    return choice
