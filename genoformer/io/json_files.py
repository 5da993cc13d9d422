"""JSON files read back one way: configs, checkpoint metadata and pointers, tokenizers, calibrations.

What is wrong with the file is said once here (unreadable, not UTF-8, not JSON, with the line);
what the value must hold is the caller's to check, with the same `error` class.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from genoformer.errors import GenoformerError, InputError


def read_json(path: str | os.PathLike, what: str, error: type[GenoformerError] = InputError):
    """The JSON value in `path`, which should be a `what`; `error` naming the file otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise error(f"{path}: cannot read {what} ({e.strerror or e})") from None
    except UnicodeDecodeError:
        raise error(f"{path}: not valid JSON, expected {what} (not UTF-8 text)") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path}: not valid JSON, expected {what} (line {e.lineno}: {e.msg})") from None
