"""Multinomial logistic regression with an L2 penalty, the plain baseline model of the quality benchmarks.

The loss is the mean cross-entropy plus l2/2 * ||W||^2 (the bias is not penalised), minimised
full-batch by L-BFGS (strong Wolfe line search): the problem is convex, so the fit
does not depend on a seed. Two inputs:
- `fit_logistic(X, y, l2)`: dense features, standardised with the training rows' mean and
  standard deviation (the scaler is part of the model);
- `fit_onehot_logistic(codes, n_symbols, y, l2)`: one-hot features given as symbol codes
  [N, positions] (a residue window), each position and symbol its own weight row, so the N x
  positions x symbols one-hot matrix is never built; `SymbolWindows` makes those codes from sequences.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

MAX_ITER = 300
DTYPE = torch.float32  # float64 doubles the cost of the k-mer fits and changes no accuracy here


@dataclass
class Logistic:
    """Dense-feature model: scores(X) = ((X - mean) / scale) @ weight + bias."""
    weight: Tensor  # [F, C]
    bias: Tensor  # [C]
    mean: Tensor  # [F]
    scale: Tensor  # [F]

    def scores(self, X: np.ndarray) -> np.ndarray:
        x = (torch.as_tensor(X, dtype=DTYPE) - self.mean) / self.scale
        return (x @ self.weight + self.bias).numpy()

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.scores(X).argmax(1)


@dataclass
class OneHotLogistic:
    """One-hot model: scores(codes) = sum over positions p of weight[p, codes[:, p]] + bias."""
    weight: Tensor  # [P, S, C]
    bias: Tensor  # [C]

    def scores(self, codes: np.ndarray) -> np.ndarray:
        return _onehot_scores(self.weight, self.bias, torch.as_tensor(codes, dtype=torch.int64)).numpy()

    def predict(self, codes: np.ndarray) -> np.ndarray:
        return self.scores(codes).argmax(1)


def _onehot_scores(weight: Tensor, bias: Tensor, codes: Tensor) -> Tensor:
    out = bias.expand(codes.shape[0], -1)
    for p in range(codes.shape[1]):  # one position at a time: memory stays N x classes (and beats embedding_bag)
        out = out + weight[p][codes[:, p]]
    return out


def _minimise(params: list[Tensor], scores, y: Tensor, l2: float, max_iter: int) -> None:
    """L-BFGS on mean cross-entropy + l2/2 * ||params[0]||^2 (params[0] is the weight)."""
    optimizer = torch.optim.LBFGS(params, lr=1, max_iter=max_iter, tolerance_grad=1e-9, tolerance_change=1e-12,
                                  history_size=20, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(scores(), y) + l2 / 2 * params[0].pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)


def fit_logistic(X: np.ndarray, y: np.ndarray, l2: float, n_classes: int | None = None,
                 max_iter: int = MAX_ITER) -> Logistic:
    x = torch.as_tensor(X, dtype=DTYPE)
    labels = torch.as_tensor(y, dtype=torch.int64)
    n_classes = n_classes or int(labels.max()) + 1
    mean, scale = x.mean(0), x.std(0)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # a constant feature stays 0
    x = (x - mean) / scale
    weight = torch.zeros(x.shape[1], n_classes, dtype=DTYPE, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=DTYPE, requires_grad=True)
    _minimise([weight, bias], lambda: x @ weight + bias, labels, l2, max_iter)
    return Logistic(weight.detach(), bias.detach(), mean, scale)


def fit_onehot_logistic(codes: np.ndarray, n_symbols: int, y: np.ndarray, l2: float, n_classes: int | None = None,
                        max_iter: int = MAX_ITER) -> OneHotLogistic:
    c = torch.as_tensor(codes, dtype=torch.int64)
    labels = torch.as_tensor(y, dtype=torch.int64)
    n_classes = n_classes or int(labels.max()) + 1
    weight = torch.zeros(c.shape[1], n_symbols, n_classes, dtype=DTYPE, requires_grad=True)
    bias = torch.zeros(n_classes, dtype=DTYPE, requires_grad=True)
    _minimise([weight, bias], lambda: _onehot_scores(weight, bias, c), labels, l2, max_iter)
    return OneHotLogistic(weight.detach(), bias.detach())


class SymbolWindows:
    """Window codes over an alphabet for `fit_onehot_logistic`: each letter of `alphabet` (either case) is its
    index, any other letter `other`, a position past either end of the sequence `outside`."""

    def __init__(self, alphabet: str):
        self.alphabet = alphabet
        self.other, self.outside, self.n_symbols = len(alphabet), len(alphabet) + 1, len(alphabet) + 2
        self._code = np.full(256, self.other, dtype=np.int64)
        for i, letter in enumerate(alphabet):
            self._code[ord(letter.upper())] = self._code[ord(letter.lower())] = i

    def codes(self, sequence: str) -> np.ndarray:
        return self._code[np.frombuffer(sequence.encode("ascii"), np.uint8)]

    def windows(self, sequence: str, half: int) -> np.ndarray:
        """int [L, 2*half+1]: the codes of each position's window, `outside` past either end."""
        pad = np.full(half, self.outside)
        padded = np.concatenate([pad, self.codes(sequence), pad])
        return np.lib.stride_tricks.sliding_window_view(padded, 2 * half + 1).copy()
