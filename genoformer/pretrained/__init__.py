"""Models shipped inside the package, found by name: `--model starter-variant` is the run folder
genoformer/pretrained/starter-variant/ (checkpoints/latest.json -> step-N/, as `train` writes it).

Each ships with its MODEL_CARD.md (data, command, scores) and the recipe that trained it
(`starter-variant`: pipelines/starter-variant.sh). A path that exists always wins over a name.
"""
from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent


def names() -> list[str]:
    """The shipped models' names."""
    return sorted(p.name for p in ROOT.iterdir() if (p / "checkpoints" / "latest.json").is_file())


def locate(name: str) -> Path | None:
    """The run folder of the shipped model `name`; None when there is no such model."""
    return ROOT / name if name in names() else None
