"""Reformer model: LSH / local / full attention, reversible residuals, rotary positions."""
from __future__ import annotations

from .attention import FullAttention, LocalAttention
from .config import ReformerConfig
from .reformer import Reformer, load_pretrained, save_pretrained

__all__ = ["ReformerConfig", "Reformer", "LSHSelfAttention", "FullAttention", "LocalAttention",
           "save_pretrained", "load_pretrained"]


def __getattr__(name: str):
    # LSH attention imports lazily so full/local models load without it
    if name == "LSHSelfAttention":
        from .lsh import LSHSelfAttention

        return LSHSelfAttention
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
