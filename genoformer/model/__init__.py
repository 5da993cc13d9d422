"""Reformer model: LSH / local / full attention, reversible residuals, rotary positions.

The names are imported on first use, so reading a model's config (config.py, per_base.py: what a
training recipe and `genoformer train --help` need) does not load torch.
"""
from __future__ import annotations

import importlib

_HOMES = {"ReformerConfig": "config", "Reformer": "reformer", "LSHSelfAttention": "lsh",
          "FullAttention": "attention", "LocalAttention": "attention"}

__all__ = list(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
