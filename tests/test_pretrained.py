"""`--model NAME` finds a model shipped in genoformer/pretrained/NAME/ (a run folder); a path always wins."""
from __future__ import annotations

import shutil

import pytest

from genoformer import pretrained
from genoformer.commands.paths import RUN_OR_CHECKPOINT
from genoformer.errors import InputError
from genoformer.model.checkpoint import load_checkpoint


def test_a_shipped_model_is_found_by_name(tiny_pattern_model, tmp_path, monkeypatch):
    monkeypatch.setattr(pretrained, "ROOT", tmp_path / "pretrained")
    shutil.copytree(tiny_pattern_model, tmp_path / "pretrained" / "starter-pattern")
    (tmp_path / "pretrained" / "not-a-run").mkdir()
    assert pretrained.names() == ["starter-pattern"]
    found = RUN_OR_CHECKPOINT.convert("starter-pattern", None, None)
    assert load_checkpoint(found)[1]["task"] == "pattern"
    with pytest.raises(InputError, match="no shipped model has that name") as err:
        RUN_OR_CHECKPOINT.convert("starter-variant", None, None)
    assert err.value.hint == "shipped models: starter-pattern"
    (tmp_path / "starter-pattern").mkdir()  # a folder of that name where the command runs wins
    monkeypatch.chdir(tmp_path)
    assert RUN_OR_CHECKPOINT.convert("starter-pattern", None, None) == "starter-pattern"
