"""Position-wise feed-forward applied over sequence chunks.

The hidden activation is ff_mult times wider than the stream; running `chunks` slices of the
sequence one after another caps that peak at 1/chunks of the full [B, T, ff_mult * d_model].
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class FeedForward(nn.Module):
    def __init__(self, d_model: int, *, mult: int = 4, dropout: float = 0.0, chunks: int = 1):
        super().__init__()
        if chunks < 1:
            raise ValueError(f"chunks must be >= 1, got {chunks}")
        self.chunks = chunks
        self.net = nn.Sequential(
            nn.Linear(d_model, mult * d_model),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mult * d_model, d_model),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x [B, T, d_model] -> [B, T, d_model]."""
        if self.chunks == 1:
            return self.net(x)
        return torch.cat([self.net(c) for c in x.chunk(self.chunks, dim=1)], dim=1)
