"""Provenance of apply/ outputs: what model, inputs, options and command made a file."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shlex
import sys
from datetime import datetime, timezone
from pathlib import Path

from genoformer import __version__
from genoformer.apply.model import AppliedModel
from genoformer.errors import InputError


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    return digest.hexdigest()


def provenance(am: AppliedModel, config, inputs: dict[str, str | Path]) -> dict[str, str | int]:
    """Attributes for an output: version, model (sha256 of its weights, description), inputs (absolute
    path and sha256 each), the command line, the config dataclass as JSON, the LSH hash seed."""
    attrs: dict[str, str | int] = {
        "genoformer_version": __version__, "model_sha256": am.sha256, "model": am.describe(),
        "model_path": str(Path(am.path).resolve()), "command": shlex.join(sys.argv),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), "hash_seed": am.hash_seed,
        "config": json.dumps(dataclasses.asdict(config), sort_keys=True)}
    for name, path in inputs.items():
        attrs[name] = str(Path(path).resolve())
        attrs[f"{name}_sha256"] = file_sha256(path)
    return attrs
