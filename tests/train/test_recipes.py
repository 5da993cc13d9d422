"""Recipes: YAML and TOML files of training options, model options flat or in a model mapping; flags win."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from genoformer.train import TrainConfig
from genoformer.train.recipes import read_recipe, with_flags

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from test_bad_inputs import assert_clean_failure  # noqa: E402
from test_config import CHOSEN  # noqa: E402
from test_loop import run_cli  # noqa: E402


@pytest.mark.parametrize("form", ["yaml nested", "yaml flat", "toml table"])
def test_every_model_option_is_reachable_from_a_recipe(form, tmp_path):
    dashed = {name.replace("_", "-"): value for name, value in CHOSEN.items()}
    if form == "yaml nested":
        path, text = tmp_path / "r.yaml", "task: mlm\nmodel:\n" + "".join(f"  {k}: {json.dumps(v)}\n"
                                                                         for k, v in dashed.items())
    elif form == "yaml flat":
        path, text = tmp_path / "r.yaml", "task: mlm\n" + "".join(f"{k}: {json.dumps(v)}\n" for k, v in dashed.items())
    else:
        path, text = tmp_path / "r.toml", 'task = "mlm"\n[model]\n' + "".join(f"{k} = {json.dumps(v)}\n"
                                                                           for k, v in dashed.items())
    path.write_text(text)
    config = TrainConfig.from_dict(read_recipe(str(path)))
    assert dataclasses.asdict(config.model) == CHOSEN


def test_flags_override_a_nested_recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("task: mlm\nmax-steps: 5\nmodel:\n  d-model: 64\n  depth: 3\n")
    config = TrainConfig.from_dict(with_flags(read_recipe(str(path)), {"d_model": 32, "max_steps": 2}))
    assert (config.model.d_model, config.model.depth, config.max_steps) == (32, 3, 2)


def test_an_unknown_model_key_in_a_recipe_fails_with_one_line(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("task: mlm\nmodel:\n  d-model: 64\n  width: 3\n")
    assert_clean_failure(run_cli("train", "--config", path, "--out", tmp_path / "run"), 2,
                         "unknown model option 'width'")
    assert not (tmp_path / "run").exists()
