"""Position-wise feed-forward: Linear (expand) -> GELU -> dropout -> Linear (contract).

Its hidden activation is ff_mult times wider than the stream.  ReversibleBlock applies the
pre-norm feed-forward over `ff_chunks` sequence chunks, in the forward pass and in the backward
recompute alike, which caps that peak at 1/ff_chunks of the full [B, T, ff_mult * d_model]
(chunking inside this module would not: autograd would keep every chunk's activations).
"""
from __future__ import annotations

from torch import Tensor, nn


class FeedForward(nn.Module):
    def __init__(self, d_model: int, *, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        # one Sequential holds the layers so that checkpoints keep their keys (net.0.*, net.3.*);
        # code uses the names below, so the two cannot drift apart unnoticed
        self.net = nn.Sequential(
            nn.Linear(d_model, mult * d_model),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mult * d_model, d_model),
        )

    @property
    def expand(self) -> nn.Linear:
        return self.net[0]

    @property
    def activation(self) -> nn.GELU:
        return self.net[1]

    @property
    def drop(self) -> nn.Dropout:
        return self.net[2]

    @property
    def contract(self) -> nn.Linear:
        return self.net[3]

    def forward(self, x: Tensor) -> Tensor:
        """x [B, T, d_model] -> [B, T, d_model]."""
        return self.contract(self.drop(self.activation(self.expand(x))))
