"""The mlm baseline: order-k Markov models of DNA, P(base | the k bases before it), in bits per base.

Counts: every position whose base and k preceding bases are all A/C/G/T (case ignored; a window
touching N is skipped), over the given sequences, optionally on both strands (each sequence and
its reverse complement, the same model reading either strand). Smoothing, per order:
- "add-one": P(x | c) = (n(c, x) + 1) / (n(c) + 4);
- "interpolated, beta": P_k(x | c) = (n(c, x) + beta * P_{k-1}(x | c')) / (n(c) + beta), with c'
  the k-1 most recent bases of c and P_0(x) = (n(x) + 1) / (n + 4): a context seen rarely leans on
  the shorter one (the hierarchical Dirichlet / MacKay-Peto estimate).
`choose` keeps, for each order, the smoothing with the fewest bits per base on validation sequences.

Bits per base of a sequence: the mean of -log2 P(base | context) over its scored positions, the
positions at least `skip` bases in whose base and `skip` preceding bases are A/C/G/T; scoring
every order with the same `skip` (the highest order) scores every order on the same bases.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ORDERS = tuple(range(6))
BETAS = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)
SMOOTHINGS = ("add-one",) + tuple(f"interpolated, beta {b:g}" for b in BETAS)

_CODE = np.full(256, -1, dtype=np.int64)
for _i, _b in enumerate(b"ACGT"):
    _CODE[_b] = _CODE[_b + 32] = _i


def codes(sequence: str | bytes) -> np.ndarray:
    """int [L]: A C G T -> 0 1 2 3 (either case), anything else -1."""
    raw = sequence.encode("ascii") if isinstance(sequence, str) else sequence
    return _CODE[np.frombuffer(raw, np.uint8)]


def reverse_complement(c: np.ndarray) -> np.ndarray:
    return np.where(c >= 0, 3 - c, -1)[::-1]


def contexts(c: np.ndarray, order: int, skip: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions, context index, base) of the scored positions of `c` (see the module docstring)."""
    skip = order if skip is None else skip
    n = c.size - skip
    if n <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    ok = np.ones(n, bool)
    for j in range(skip + 1):
        ok &= c[skip - j:skip - j + n] >= 0
    index = np.zeros(n, np.int64)
    for j in range(order, 0, -1):  # oldest base first: the most recent base is the lowest digit
        index = index * 4 + np.maximum(c[skip - j:skip - j + n], 0)
    positions = np.arange(skip, c.size)[ok]
    return positions, index[ok], c[positions]


@dataclass
class MarkovCounts:
    """n(context, base) for every order up to `max_order`: counts[k] is [4^k, 4]."""
    counts: list[np.ndarray]

    @classmethod
    def fit(cls, sequences: list[np.ndarray], max_order: int, both_strands: bool = True) -> MarkovCounts:
        strands = sequences + ([reverse_complement(c) for c in sequences] if both_strands else [])
        counts = []
        for k in range(max_order + 1):
            n = np.zeros(4 ** (k + 1), np.int64)
            for c in strands:
                _, index, base = contexts(c, k)
                n += np.bincount(index * 4 + base, minlength=4 ** (k + 1))
            counts.append(n.reshape(4 ** k, 4))
        return cls(counts)

    def probabilities(self, order: int, smoothing: str) -> np.ndarray:
        """float [4^order, 4]: P(base | context) under `smoothing` (one of SMOOTHINGS)."""
        if smoothing == "add-one":
            n = self.counts[order]
            return (n + 1) / (n.sum(1, keepdims=True) + 4)
        beta = float(smoothing.rsplit(" ", 1)[1])
        p = (self.counts[0] + 1) / (self.counts[0].sum() + 4)
        for k in range(1, order + 1):
            n = self.counts[k]
            shorter = p[np.arange(4 ** k) % 4 ** (k - 1)]  # drop the oldest base of each context
            p = (n + beta * shorter) / (n.sum(1, keepdims=True) + beta)
        return p


def bits_per_base(p: np.ndarray, sequences: list[np.ndarray], skip: int) -> tuple[float, int]:
    """(mean -log2 P over the scored positions of `sequences`, how many) under the table `p`."""
    order = int(round(np.log(p.shape[0]) / np.log(4)))
    total, n = 0.0, 0
    for c in sequences:
        _, index, base = contexts(c, order, skip)
        total -= np.log2(p[index, base]).sum()
        n += base.size
    return total / n, n


def choose(counts: MarkovCounts, val: list[np.ndarray], orders=ORDERS, smoothings=SMOOTHINGS) -> list[dict]:
    """Per order: the smoothing with the fewest validation bits per base, and every candidate's bits."""
    skip = max(orders)
    out = []
    for k in orders:
        grid = {s: bits_per_base(counts.probabilities(k, s), val, skip)[0] for s in smoothings}
        best = min(grid, key=grid.get)
        out.append({"order": k, "smoothing": best, "val_bits": grid[best], "grid": grid})
    return out
