"""Checkpoints: round trip, a failed save leaves the previous one intact, pickle payloads never run."""
from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from genoformer.errors import CheckpointError
from genoformer.model.checkpoint import (BEST, LATEST, load_checkpoint, prune, read_pointer, resolve, save_checkpoint,
                                      set_pointer)
from genoformer.model import ReformerConfig
from genoformer.model.heads import GenoModel
from genoformer.tokenize import KmerTokenizer

HEAD = {"n_classes": 3, "n_evidence": 10, "class_names": []}


def tiny_model(seed: int = 0) -> GenoModel:
    torch.manual_seed(seed)
    tok = KmerTokenizer(3)
    config = ReformerConfig(vocab_size=tok.vocab_size, d_model=16, depth=1, heads=2, attention="full")
    return GenoModel(config, tok, "variant", n_classes=3, n_evidence=10)


def test_round_trip_of_weights_metadata_and_state(tmp_path):
    model = tiny_model()
    state = {"optimizer": {"lr": 0.1}, "rng": {"torch": torch.get_rng_state()}, "sampler": {"consumed": 8}}
    folder = save_checkpoint(tmp_path, model, {"step": 4, "head": HEAD}, state)
    assert folder == resolve(tmp_path) == tmp_path / "checkpoints" / "step-00000004"
    loaded, meta, st = load_checkpoint(tmp_path, with_state=True)
    assert meta["step"] == 4 and meta["task"] == "variant" and meta["tokenizer"]["k"] == 3
    assert set(meta["versions"]) >= {"genoformer", "torch", "python"}
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor)
    assert st["sampler"] == {"consumed": 8} and torch.equal(st["rng"]["torch"], state["rng"]["torch"])
    assert sorted(os.listdir(folder)) == ["checkpoint.json", "model.safetensors", "state.pt"]


class Poison:
    """Fails while being pickled, like a crash in the middle of writing the state file."""

    def __reduce__(self):
        raise RuntimeError("poison")


def test_a_failed_save_leaves_the_previous_checkpoint_in_use_and_nothing_partial(tmp_path):
    good = save_checkpoint(tmp_path, tiny_model(0), {"step": 2, "head": HEAD}, {"ok": 1})
    with pytest.raises(RuntimeError, match="poison"):
        save_checkpoint(tmp_path, tiny_model(1), {"step": 4, "head": HEAD}, {"bad": Poison()})
    assert sorted(os.listdir(tmp_path / "checkpoints")) == [LATEST, good.name]
    assert resolve(tmp_path) == good
    loaded, meta, _ = load_checkpoint(tmp_path)
    assert meta["step"] == 2
    assert torch.equal(loaded.encoder.token_emb.weight, tiny_model(0).encoder.token_emb.weight)


class Payload:
    def __reduce__(self):
        return (os.system, ("touch payload-ran",))


def test_a_pickle_payload_in_the_state_is_refused_and_never_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = save_checkpoint(tmp_path, tiny_model(), {"step": 1, "head": HEAD}, {"ok": 1})
    with open(folder / "state.pt", "wb") as fh:
        pickle.dump({"x": Payload()}, fh, protocol=2)
    with pytest.raises(CheckpointError, match="state.pt: not a readable training state"):
        load_checkpoint(tmp_path, with_state=True)
    assert not (tmp_path / "payload-ran").exists()


def test_corrupt_or_foreign_files_name_the_file(tmp_path):
    folder = save_checkpoint(tmp_path, tiny_model(), {"step": 1, "head": HEAD}, {})
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors: sha256 differs"):
        load_checkpoint(folder)
    (folder / "checkpoint.json").write_text("{ not json")
    with pytest.raises(CheckpointError, match="checkpoint.json: not valid JSON"):
        load_checkpoint(folder)
    with pytest.raises(CheckpointError, match="not a genoformer run folder"):
        load_checkpoint(tmp_path / "checkpoints")


def test_prune_keeps_the_latest_and_the_best(tmp_path):
    model = tiny_model()
    folders = [save_checkpoint(tmp_path, model, {"step": s, "head": HEAD}, {}) for s in (1, 2, 3)]
    set_pointer(tmp_path, BEST, folders[0], 0.9)
    save_checkpoint(tmp_path, model, {"step": 4, "head": HEAD}, {})
    prune(tmp_path)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if p.is_dir()) == ["step-00000001",
                                                                                         "step-00000004"]
    assert read_pointer(tmp_path, BEST) == {"checkpoint": "step-00000001", "metric": 0.9}
    assert json.loads((tmp_path / "checkpoints" / LATEST).read_text())["checkpoint"] == "step-00000004"
