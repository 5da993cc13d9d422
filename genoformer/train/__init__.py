"""Training: the config (config.py), recipes, the data it reads, the loop (exact resume, torchrun), losses
and metrics.

    from genoformer.train import TrainConfig, ModelConfig, train, resume, dry_run

The names are imported on first use, so reading a recipe or a config does not load the loop.
"""
from __future__ import annotations

import importlib

_HOMES = {"TrainConfig": "config", "ModelConfig": "config", "RESUME_OVERRIDES": "config",
          "read_recipe": "recipes", "train": "loop", "resume": "loop", "dry_run": "loop"}

__all__ = list(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
