"""The branch of a pre-norm residual block: fn(LayerNorm(x))."""
from __future__ import annotations

from torch import Tensor, nn


class PreNorm(nn.Module):
    """fn(norm(x), **kwargs): an attention or feed-forward `fn` behind its own LayerNorm."""

    def __init__(self, d_model: int, fn: nn.Module):
        super().__init__()
        self.norm, self.fn = nn.LayerNorm(d_model), fn

    def forward(self, x: Tensor, **kwargs) -> Tensor:
        return self.fn(self.norm(x), **kwargs)
