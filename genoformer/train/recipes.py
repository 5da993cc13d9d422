"""Recipes: training options from a YAML or TOML file, which command-line flags then override.

Keys are spelled as the flags, with dashes or underscores. Model options may sit at the top level
(`d-model: 256`) or in a `model` mapping (`model: {d-model: 256}`, a `[model]` table in TOML).
"""
from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path

from genoformer.errors import UsageError
from genoformer.train.config import nest_model_options


def read_recipe(path: str) -> dict:
    """Options from a YAML or TOML file, keys in underscores (the model mapping's too)."""
    raw = Path(path).read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise UsageError(f"{path}: line {line}: byte 0x{raw[e.start]:02x} is not UTF-8 text; "
                         "a recipe must be UTF-8 YAML or TOML") from None
    try:
        if path.endswith(".toml"):
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # pragma: no cover - Python 3.10
                import tomli as tomllib
            values = tomllib.loads(text)
        else:
            import yaml

            values = yaml.safe_load(text) or {}
    except Exception as e:  # yaml and toml parse errors share no base class
        first = str(e).splitlines()[0] if str(e) else ""
        raise UsageError(f"{path}: not a valid YAML/TOML recipe ({type(e).__name__}: {first})") from None
    if not isinstance(values, dict):
        raise UsageError(f"{path}: a recipe must be a mapping of option names to values")
    values = _underscored(values)
    if isinstance(values.get("model"), Mapping):
        values["model"] = _underscored(values["model"])
    return values


def with_flags(recipe: Mapping, flags: Mapping) -> dict:
    """The recipe's options overridden by the flags given; model options merge whichever way each is spelled."""
    recipe, flags = nest_model_options(recipe), nest_model_options(flags)
    return dict(recipe) | dict(flags) | {"model": recipe["model"] | flags["model"]}


def _underscored(values: Mapping) -> dict:
    return {str(key).replace("-", "_"): value for key, value in values.items()}
