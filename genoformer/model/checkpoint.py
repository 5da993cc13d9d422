"""Training checkpoints: safetensors weights + JSON metadata + optimizer/scheduler/RNG/sampler state.

A checkpoint is a folder `RUN/checkpoints/step-NNNNNNNN/` holding
  model.safetensors   weights (no code runs on load)
  checkpoint.json     model config, per-base config, tokenizer, task head, train config, step, seed, versions,
                      sha256 of the weights
  state.pt            optimizer, scheduler, RNG and sampler state (with --ema also the trained weights, the
                      saved ones being their average), read with torch.load(weights_only=True)
The files are written into a hidden temp folder that is fsynced and renamed into place
(genoformer.outputs.staged_folder), and `RUN/checkpoints/latest.json` (and `best.json`) point at a
finished folder, replaced atomically: a kill at any moment leaves the previous checkpoint intact
and never a half-written one in use.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_bytes

from genoformer import __version__
from genoformer.errors import CheckpointError, InputError, UsageError
from genoformer.io.evidence import EVIDENCE_FEATURES
from genoformer.io.json_files import read_json
from genoformer.model.config import ReformerConfig
from genoformer.model.heads import GenoModel
from genoformer.model.per_base import LEGACY, PerBaseConfig
from genoformer.outputs import staged_folder, write_text
from genoformer.tokenize import tokenizer_from_dict

FORMAT, FORMAT_VERSION = "genoformer-checkpoint", 1
WEIGHTS, META, STATE = "model.safetensors", "checkpoint.json", "state.pt"
LATEST, BEST = "latest.json", "best.json"
_STEP_NAME = re.compile(r"step-[0-9]{8}")  # a checkpoint folder's name: the step, zero-padded


def versions() -> dict[str, str]:
    return {"genoformer": __version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}


def weights_bytes(model: GenoModel) -> bytes:
    """The model's weights as safetensors bytes (what model.safetensors holds; its sha256 names the weights)."""
    return safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
                             metadata={"format": "pt"})


def save_checkpoint(run_dir: str | os.PathLike, model: GenoModel, meta: dict, state: dict) -> Path:
    """Write checkpoints/step-<meta['step']>/ atomically, point latest.json at it; returns the folder."""
    final = Path(run_dir) / "checkpoints" / f"step-{int(meta['step']):08d}"
    weights = weights_bytes(model)
    meta = meta | {"format": FORMAT, "format_version": FORMAT_VERSION, "task": model.task,
                   "model_config": model.encoder.config.to_dict(), "per_base": model.per_base.to_dict(),
                   "tokenizer": model.tokenizer.to_dict(),
                   "versions": versions(), "weights_sha256": hashlib.sha256(weights).hexdigest()}
    # the same step saved again (e.g. a final save right after a periodic one) replaces its folder
    with staged_folder(final) as tmp:
        (tmp / WEIGHTS).write_bytes(weights)
        (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
        torch.save(state, tmp / STATE)
    set_pointer(run_dir, LATEST, final, meta.get("metric"))
    return final


def set_pointer(run_dir: str | os.PathLike, pointer: str, folder: Path, metric: float | None = None) -> None:
    """Atomically point RUN/checkpoints/<pointer> (latest.json / best.json) at a checkpoint folder."""
    body = {"checkpoint": folder.name, "metric": metric}
    write_text(Path(run_dir) / "checkpoints" / pointer, json.dumps(body) + "\n")


def read_pointer(run_dir: str | os.PathLike, pointer: str = LATEST) -> dict | None:
    """RUN/checkpoints/<pointer>'s body, None when there is none; CheckpointError (naming the file) when it is
    unreadable or names anything but a checkpoint folder of this run (checkpoints/step-NNNNNNNN/)."""
    path = Path(run_dir) / "checkpoints" / pointer
    if not path.exists():
        return None
    body = read_json(path, "a checkpoint pointer", CheckpointError)
    name = body.get("checkpoint") if isinstance(body, dict) else None
    if not isinstance(name, str) or not _STEP_NAME.fullmatch(name):
        raise CheckpointError(f"{path}: points at {name!r}, not a checkpoint folder of this run "
                              "(step-NNNNNNNN inside its checkpoints/)")
    if not (path.parent / name / META).is_file():
        raise CheckpointError(f"{path}: points at {name}, which is not in {path.parent}")
    return body


def prune(run_dir: str | os.PathLike) -> None:
    """Delete checkpoint folders other than the latest and the best (and stale temp folders)."""
    root = Path(run_dir) / "checkpoints"
    keep = {p["checkpoint"] for p in (read_pointer(run_dir, LATEST), read_pointer(run_dir, BEST)) if p}
    for folder in root.iterdir():
        if folder.is_dir() and folder.name not in keep and folder.name.startswith(("step-", ".step-")):
            shutil.rmtree(folder, ignore_errors=True)


def resolve(path: str | os.PathLike) -> Path:
    """A checkpoint folder from a run folder (its latest checkpoint) or a checkpoint folder itself."""
    path = Path(path)
    if (path / META).is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(f"{path}: no such run or checkpoint folder")
    pointer = read_pointer(path, LATEST)
    if pointer is None:
        raise CheckpointError(f"{path}: not a genoformer run folder (no checkpoints/{LATEST})")
    return path / "checkpoints" / pointer["checkpoint"]


def load_checkpoint(path: str | os.PathLike, *, with_state: bool = False, device: str | torch.device = "cpu",
                    hash_seed: int | None = None) -> tuple[GenoModel, dict, dict | None]:
    """(model, metadata, state or None) from a run or checkpoint folder; CheckpointError names the bad file.

    hash_seed fixes the LSH rotations for inference (ReformerConfig.hash_seed); None keeps the saved
    config's (a trained model's: fresh rotations every call).
    """
    if hash_seed is not None and (isinstance(hash_seed, bool) or not isinstance(hash_seed, int) or hash_seed < 0):
        raise UsageError(f"hash seed must be an integer >= 0, got {hash_seed!r}")  # the caller's error
    folder = resolve(path)
    meta = _read_meta(folder / META)
    weights_path = folder / WEIGHTS
    try:
        weights = weights_path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{weights_path}: cannot read ({e.strerror or e})") from None
    if hashlib.sha256(weights).hexdigest() != meta.get("weights_sha256"):
        raise CheckpointError(f"{weights_path}: sha256 differs from {META} (corrupt or replaced weights)")
    try:
        config = ReformerConfig.from_dict(meta["model_config"])
        if hash_seed is not None:
            config = dataclasses.replace(config, hash_seed=hash_seed)
        tokenizer = tokenizer_from_dict(meta["tokenizer"])
        head = meta["head"]
        # saved before the stem and decoder existed: the k x classes head and per-token evidence fusion
        per_base = PerBaseConfig.from_dict(meta["per_base"]) if "per_base" in meta else LEGACY
        n_evidence = int(head["n_evidence"])
        if list(head.get("evidence_features", EVIDENCE_FEATURES[:n_evidence])) != list(EVIDENCE_FEATURES[:n_evidence]):
            raise ValueError(f"its read evidence columns {head['evidence_features']} are not this genoformer's "
                             f"first {n_evidence} ({', '.join(EVIDENCE_FEATURES[:n_evidence])})")
        model = GenoModel(config, tokenizer, meta["task"], n_classes=int(head["n_classes"]),
                          n_evidence=n_evidence, per_base=per_base)
    except (KeyError, TypeError, ValueError, UsageError, InputError) as e:
        raise CheckpointError(f"{folder / META}: bad model description ({e})") from None
    try:
        tensors = safetensors_load(weights)
    except (SafetensorError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({e})") from None
    expected = model.state_dict()
    if set(tensors) != set(expected) or any(tensors[n].shape != expected[n].shape for n in expected):
        raise CheckpointError(f"{weights_path}: tensors do not fit the model described in {META}")
    model.load_state_dict(tensors)
    state = None
    if with_state:
        try:
            state = torch.load(folder / STATE, map_location="cpu", weights_only=True)
        except Exception as e:  # torch raises many types for a bad pickle; all mean the same here
            raise CheckpointError(f"{folder / STATE}: not a readable training state ({type(e).__name__})") from None
    return model.to(device), meta, state


def _read_meta(path: Path) -> dict:
    meta = read_json(path, "a checkpoint's metadata", CheckpointError)
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a genoformer checkpoint")
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: checkpoint format_version {meta.get('format_version')!r} is not "
                              f"supported (this genoformer reads {FORMAT_VERSION})")
    return meta
