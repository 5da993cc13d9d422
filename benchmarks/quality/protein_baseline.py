"""The secondary-structure baselines: a per-amino-acid lookup and logistic regression on residue windows.

Both learn from the scored (resolved) residues of FLIP's SET=train chains minus VALIDATION=True,
and predict a 3-state letter per residue:
- lookup: each amino acid's commonest label in training (an unseen letter gets the overall
  commonest label);
- window logistic regression: L2 logistic regression (logistic.py) on the one-hot residues of a
  +-HALF_WINDOW window (15 positions x 22 symbols: the 20 standard amino acids, any other letter,
  and "outside the chain"), fitted on a seeded random MAX_FIT_RESIDUES of the ~2.3 million training
  residues (for time: a full-batch fit step over all of them takes seconds on a shared CPU core,
  and the model has only 990 weights); the penalty is chosen on the VALIDATION=True chains' scored
  residues (all of them).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from logistic import OneHotLogistic, SymbolWindows, fit_onehot_logistic

from genoformer.data.sequences import LabelledSequences

AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
SYMBOLS = SymbolWindows(AMINO_ACIDS)
OTHER, OUTSIDE, N_SYMBOLS = SYMBOLS.other, SYMBOLS.outside, SYMBOLS.n_symbols
HALF_WINDOW = 7
L2_GRID = (1e-5, 1e-4, 1e-3)
MAX_FIT_RESIDUES = 500_000

residue_codes = SYMBOLS.codes


def windows(sequence: str, half: int = HALF_WINDOW) -> np.ndarray:
    """int [L, 2*half+1]: the symbol codes of each residue's window, OUTSIDE past either end."""
    return SYMBOLS.windows(sequence, half)


def scored_residues(chains: LabelledSequences, half: int = HALF_WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """(windows [N, 2*half+1], label letters [N]) of every scored residue (mask 1, or all without a mask)."""
    codes, labels = [], []
    for seq, label, mask in zip(chains.sequences, chains.labels, chains.masks):
        keep = np.ones(len(seq), bool) if mask is None else np.asarray(mask, bool)
        codes.append(windows(seq, half)[keep])
        labels.append(np.array(list(label))[keep])
    return np.concatenate(codes), np.concatenate(labels)


@dataclass
class Lookup:
    by_code: np.ndarray  # label letter per residue code

    @classmethod
    def fit(cls, centre_codes: np.ndarray, labels: np.ndarray) -> Lookup:
        overall = Counter(labels.tolist()).most_common(1)[0][0]
        by_code = np.array([overall] * N_SYMBOLS, dtype=object)
        for code in np.unique(centre_codes):
            by_code[code] = Counter(labels[centre_codes == code].tolist()).most_common(1)[0][0]
        return cls(by_code)

    def predict(self, centre_codes: np.ndarray) -> np.ndarray:
        return self.by_code[centre_codes].astype(str)


@dataclass
class WindowModel:
    classes: list[str]
    l2: float
    model: OneHotLogistic
    grid: list[dict]  # every penalty's validation Q3
    fit_residues: int

    def predict(self, codes: np.ndarray) -> np.ndarray:
        return np.array(self.classes)[self.model.predict(codes)]


def fit_window_model(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray],
                     l2_grid: tuple[float, ...] = L2_GRID, max_fit: int = MAX_FIT_RESIDUES) -> WindowModel:
    """Fit every penalty on `train` (windows, letters), keep the best validation Q3 (ties: the larger penalty)."""
    classes = sorted(set(train[1].tolist()))
    rng = np.random.default_rng(0)
    pick = np.sort(rng.permutation(len(train[1]))[:max_fit]) if len(train[1]) > max_fit else slice(None)
    codes, y = train[0][pick], np.searchsorted(classes, train[1][pick])
    fits = []
    for l2 in l2_grid:
        model = fit_onehot_logistic(codes, N_SYMBOLS, y, l2, n_classes=len(classes))
        q3 = float((np.array(classes)[model.predict(val[0])] == val[1]).mean())
        fits.append(({"l2": l2, "val_q3": q3}, model))
    best, model = max(fits, key=lambda f: (f[0]["val_q3"], f[0]["l2"]))
    return WindowModel(classes, best["l2"], model, [f[0] for f in fits], len(y))
