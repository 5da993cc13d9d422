"""The classify baseline: logistic regression on k-mer frequencies, settings chosen on validation data.

Features of a sequence: for each k of a feature set, the counts of its 4^k ACGT k-mers (every
overlapping k-mer; those holding another letter, e.g. N, are skipped) divided by the number of
k-mer positions, so a sequence's features do not depend on its length. Feature sets: each single
k in 1..6 and all of them concatenated ("1-6", 5,460 features).

`choose_and_fit` splits the training sequences once more (seeded, stratified, VAL_SHARE held out),
fits every feature set x L2 penalty on the rest, keeps the best validation accuracy (ties: the
smaller feature set, then the larger penalty), and refits that choice on all training sequences.
The scored sequences are never seen before the final score.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from logistic import Logistic, fit_logistic

from genoformer.data.sequences import LabelledSequences, split

FEATURE_SETS: dict[str, tuple[int, ...]] = {**{str(k): (k,) for k in range(1, 7)}, "1-6": tuple(range(1, 7))}
L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)
VAL_SHARE = 0.25  # of the training sequences (20 % of the file when they are 80 %)

_CODE = np.full(256, -1, dtype=np.int64)
for _i, _b in enumerate(b"ACGT"):
    _CODE[_b] = _CODE[_b + 32] = _i


def kmer_counts(sequences: list[str], k: int) -> np.ndarray:
    """float [N, 4^k]: counts of each ACGT k-mer (lexicographic order, A < C < G < T) per sequence."""
    out = np.zeros((len(sequences), 4 ** k))
    for row, seq in enumerate(sequences):
        codes = _CODE[np.frombuffer(seq.encode("ascii"), np.uint8)]
        n = codes.size - k + 1
        if n <= 0:
            continue
        index, valid = np.zeros(n, np.int64), np.ones(n, bool)
        for j in range(k):
            part = codes[j:j + n]
            index = index * 4 + np.maximum(part, 0)
            valid &= part >= 0
        out[row] = np.bincount(index[valid], minlength=4 ** k)
    return out


def kmer_features(sequences: list[str], ks: tuple[int, ...]) -> np.ndarray:
    """Concatenated k-mer frequencies (counts / k-mer positions) for each k in `ks`."""
    lengths = np.array([len(s) for s in sequences], dtype=float)
    return np.concatenate([kmer_counts(sequences, k) / np.maximum(lengths - k + 1, 1)[:, None] for k in ks], axis=1)


@dataclass
class KmerChoice:
    feature_set: str
    l2: float
    val_accuracy: float
    model: Logistic  # refitted on all training sequences
    grid: list[dict]  # every candidate's validation accuracy

    def predict(self, sequences: list[str]) -> np.ndarray:
        return self.model.predict(kmer_features(sequences, FEATURE_SETS[self.feature_set]))


def labels_of(seqs: LabelledSequences, class_names: list[str]) -> np.ndarray:
    return np.array([class_names.index(label) for label in seqs.labels])


def choose_and_fit(train: LabelledSequences, class_names: list[str], seed: int,
                   feature_sets: dict[str, tuple[int, ...]] = FEATURE_SETS,
                   l2_grid: tuple[float, ...] = L2_GRID) -> KmerChoice:
    fit_idx, val_idx = split(train, VAL_SHARE, seed)
    y = labels_of(train, class_names)
    grid = []
    for name, ks in feature_sets.items():
        X = kmer_features(train.sequences, ks)
        for l2 in l2_grid:
            model = fit_logistic(X[fit_idx], y[fit_idx], l2, n_classes=len(class_names))
            accuracy = float((model.predict(X[val_idx]) == y[val_idx]).mean())
            grid.append({"feature_set": name, "features": X.shape[1], "l2": l2, "val_accuracy": accuracy})
    best = max(grid, key=lambda g: (g["val_accuracy"], -g["features"], g["l2"]))
    X = kmer_features(train.sequences, feature_sets[best["feature_set"]])
    model = fit_logistic(X, y, best["l2"], n_classes=len(class_names))
    return KmerChoice(best["feature_set"], best["l2"], best["val_accuracy"], model, grid)
