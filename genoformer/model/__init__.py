"""Reformer model: LSH / local / full attention, reversible residuals, rotary positions."""
from __future__ import annotations

from .attention import FullAttention, LocalAttention
from .config import ReformerConfig
from .lsh import LSHSelfAttention
from .reformer import Reformer

__all__ = ["ReformerConfig", "Reformer", "LSHSelfAttention", "FullAttention", "LocalAttention"]
