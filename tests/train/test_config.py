"""TrainConfig and its model section: every ReformerConfig and PerBaseConfig field a run chooses is
reachable from a recipe (nested or flat) and from the command line, is what the model is built with,
and is recorded in config.json and the checkpoint; window_size is its own option; runs saved flat, or
before the per-base stem and decoder, still resume."""
from __future__ import annotations

import csv
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from genoformer.cli import cli
from genoformer.commands.train import train as train_command
from genoformer.errors import UsageError
from genoformer.model.checkpoint import META, load_checkpoint, resolve
from genoformer.model.config import ReformerConfig
from genoformer.model.per_base import LEGACY, PerBaseConfig
from genoformer.train import ModelConfig, TrainConfig, resume, train
from genoformer.train.config import ENCODER_OPTIONS, MODEL_OPTIONS, NOT_CHOSEN, PER_BASE_OPTIONS

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fasta_factory import write_fasta  # noqa: E402

# every model option away from its default (and window_size away from bucket_size)
CHOSEN = dict(d_model=16, depth=2, heads=2, bucket_size=4, n_hashes=2, attention=["lsh", "local"], reversible=False,
              ff_mult=2, ff_chunks=2, dropout=0.1, causal=True, window_size=16, stem=False, stem_width=8,
              decoder=False, decoder_width=8, decoder_depth=1, evidence_scaling="share", soft_mask_input=False,
              composition_k=0)  # an mlm model has no per-sequence head (test_classify gives it a value)
TINY_RUN = dict(task="mlm", window=64, k=3, lr=3e-3, warmup_steps=1, batch_size=2, val_every=1000, ckpt_every=1000,
                progress=False, device="cpu")
# the model options as the shipped recipes spell them before this section existed
OLD_FLAT = ("d_model", "depth", "heads", "bucket_size", "n_hashes", "attention")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("reference") / "ref.fa"
    write_fasta(path, {"chrA": "".join(rng.choice(list("ACGT"), 3000))})
    return path


def losses(run: Path) -> dict[int, float]:
    rows = csv.DictReader((run / "metrics.csv").open())
    return {int(r["step"]): float(r["value"]) for r in rows if r["split"] == "train" and r["metric"] == "loss"}


def test_the_model_section_is_reformer_config_less_what_the_data_fixes_and_the_per_base_parts():
    reformer = {f.name: f.default for f in dataclasses.fields(ReformerConfig)}
    per_base = PerBaseConfig().to_dict()
    assert set(ENCODER_OPTIONS) == set(reformer) - set(NOT_CHOSEN) and set(PER_BASE_OPTIONS) == set(per_base)
    assert set(MODEL_OPTIONS) == set(ENCODER_OPTIONS) | set(PER_BASE_OPTIONS)
    defaults = dataclasses.asdict(ModelConfig())
    assert defaults == per_base | {name: reformer[name] for name in ENCODER_OPTIONS} | {"window_size": None}
    # one dropout for the whole model: the encoder's, the stem's and the decoder's
    section = ModelConfig(dropout=0.2, stem_width=8)
    assert section.reformer_config(vocab_size=10).dropout == section.per_base_config().dropout == 0.2
    assert section.per_base_config() == PerBaseConfig(stem_width=8, dropout=0.2)
    # window_size unset takes bucket_size: local attention then sees LSH's keys per query
    assert ModelConfig(bucket_size=8).reformer_config(vocab_size=10).window_size == 8
    assert ModelConfig(bucket_size=8, window_size=32).reformer_config(vocab_size=10).window_size == 32


def test_unknown_doubled_and_impossible_model_options_are_refused():
    with pytest.raises(UsageError, match="unknown model option 'width'"):
        TrainConfig.from_dict({"model": {"width": 3}})
    with pytest.raises(UsageError, match="unknown training option 'learning_rate'"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(UsageError, match="'depth' is given twice"):
        TrainConfig.from_dict({"depth": 2, "model": {"depth": 3}})
    with pytest.raises(UsageError, match="model must be a mapping"):
        TrainConfig.from_dict({"model": "big"})
    with pytest.raises(UsageError, match=r"heads \(3\) must divide d_model \(32\)"):  # before any input is read
        TrainConfig.from_dict({"d_model": 32, "heads": 3})


def test_cli_flags_reach_every_model_option(reference, tmp_path):
    flags = ["--d-model", 16, "--depth", 2, "--heads", 2, "--bucket-size", 4, "--n-hashes", 2, "--attention",
             "lsh,local", "--no-reversible", "--ff-mult", 2, "--ff-chunks", 2, "--dropout", 0.1, "--causal",
             "--window-size", 16, "--no-stem", "--stem-width", 8, "--no-decoder", "--decoder-width", 8,
             "--decoder-depth", 1, "--evidence-scaling", "share", "--no-soft-mask-input", "--composition-k", 0]
    assert {param.name for param in train_command.params} >= set(MODEL_OPTIONS)
    result = CliRunner().invoke(cli, ["train", "--reference", str(reference), "--window", 64, "--k", 3,
                                      "--out", str(tmp_path / "run"), "--dry-run", *map(str, flags)])
    assert result.exit_code == 0, (result.output, result.exception)
    assert json.loads(result.stdout)["config"]["model"] == CHOSEN


def test_every_model_option_builds_the_model_and_is_recorded(reference, tmp_path):
    run = tmp_path / "run"
    train(TrainConfig.from_dict(TINY_RUN | dict(reference=str(reference), max_steps=1, out=str(run), model=CHOSEN)))
    assert json.loads((run / "config.json").read_text())["model"] == CHOSEN
    model, meta, _ = load_checkpoint(run)
    assert meta["train_config"]["model"] == CHOSEN
    # what the encoder was built with (checkpoint.json's model_config is the encoder's own config), and
    # the stem and decoder (its per_base section)
    assert {name: meta["model_config"][name] for name in ENCODER_OPTIONS} == \
        {name: CHOSEN[name] for name in ENCODER_OPTIONS}
    assert meta["per_base"] == {name: CHOSEN[name] for name in PER_BASE_OPTIONS}
    assert model.encoder.config.window_size == 16 != model.encoder.config.bucket_size
    assert model.stem is None and isinstance(model.head, torch.nn.Linear)  # mlm without the decoder: k-mer logits

    # left out, window_size is recorded as the bucket_size it took; the stem and decoder at their widths
    default = tmp_path / "default"
    train(TrainConfig.from_dict(TINY_RUN | dict(reference=str(reference), max_steps=1, out=str(default),
                                                model=dict(CHOSEN, window_size=None, attention="local", stem=True,
                                                           decoder=True))))
    recorded = json.loads((default / "config.json").read_text())["model"]
    assert recorded["window_size"] == recorded["bucket_size"] == 4
    built, meta, _ = load_checkpoint(default)
    assert meta["model_config"]["window_size"] == 4
    assert built.stem.width == 8 and built.head.out.in_features == 8 and len(built.head.blocks) == 1


def test_a_run_saved_with_a_flat_train_config_resumes(reference, tmp_path):
    """Runs saved before the model section existed hold their model options at the top level."""
    model = dict(d_model=16, depth=2, heads=2, bucket_size=4, n_hashes=2, attention="lsh")
    common = TINY_RUN | dict(reference=str(reference), max_steps=4, model=model)
    train(TrainConfig.from_dict(common | dict(out=str(tmp_path / "full"))))
    train(TrainConfig.from_dict(common | dict(out=str(tmp_path / "old"), stop_after=2)))
    meta_path = resolve(tmp_path / "old") / META
    meta = json.loads(meta_path.read_text())
    saved = meta["train_config"]
    flat = {name: value for name, value in saved.items() if name != "model"} | \
        {name: saved["model"][name] for name in OLD_FLAT}
    meta_path.write_text(json.dumps(meta | {"train_config": flat}))

    resume(tmp_path / "old", progress=False)
    assert losses(tmp_path / "old") == losses(tmp_path / "full")  # bitwise equal on CPU
    recorded = json.loads((tmp_path / "old" / "config.json").read_text())
    assert recorded["model"] == dataclasses.asdict(ModelConfig(**model, window_size=4))
    assert not set(OLD_FLAT) & set(recorded)


def test_every_train_option_has_help_and_shows_its_default():
    config = TrainConfig()  # the defaults a run really gets
    text = " ".join(CliRunner().invoke(train_command, ["--help"], terminal_width=400).output.split())
    options = [p for p in train_command.params if p.name != "help"]
    assert text.count("[default: ") == len(options)
    for param in options:
        assert param.help and isinstance(param.show_default, str) and param.show_default, param.name
        name = {"recipe": "config"}.get(param.name, param.name)
        value = getattr(config.model, name, getattr(config, name, None))
        if isinstance(value, bool) or value is None or isinstance(value, list) or name == "class_weights":
            continue  # said in words (bidirectional, the whole reference, ...)
        shown = param.show_default.split(" ")[0].rstrip(",") if name == "window" else param.show_default
        parsed = type(value)(shown.replace(",", "")) if isinstance(value, (int, float)) else shown
        assert parsed == value, (name, param.show_default, value)
        assert f"[default: {param.show_default}]" in text
    assert TrainConfig(task="variant").class_weights == "balanced" and "balanced for variant" in text


def test_a_run_saved_before_the_per_base_options_resumes(reference, tmp_path):
    """Runs saved before the stem and decoder: no per_base section, no per-base options; their models had neither."""
    model = dict(d_model=16, depth=2, heads=2, bucket_size=4, n_hashes=2, attention="lsh", stem=False, decoder=False)
    common = TINY_RUN | dict(reference=str(reference), max_steps=4, model=model)
    train(TrainConfig.from_dict(common | dict(out=str(tmp_path / "full"))))
    train(TrainConfig.from_dict(common | dict(out=str(tmp_path / "old"), stop_after=2)))
    meta_path = resolve(tmp_path / "old") / META
    meta = json.loads(meta_path.read_text())
    saved = meta["train_config"]
    flat = {name: value for name, value in saved.items() if name not in ("model", "rc_augment", "shift_augment")} | \
        {name: saved["model"][name] for name in OLD_FLAT}
    head = {name: value for name, value in meta["head"].items() if name != "evidence_features"}
    old = {name: value for name, value in meta.items() if name != "per_base"}
    meta_path.write_text(json.dumps(old | {"train_config": flat, "head": head}))
    assert load_checkpoint(tmp_path / "old")[0].per_base == LEGACY

    resume(tmp_path / "old", progress=False)
    assert losses(tmp_path / "old") == losses(tmp_path / "full")  # bitwise equal on CPU
    recorded = json.loads((tmp_path / "old" / "config.json").read_text())["model"]
    assert recorded["stem"] is False and recorded["decoder"] is False
    assert load_checkpoint(tmp_path / "old")[1]["per_base"] == LEGACY.to_dict()


@pytest.mark.parametrize("ema", [1, 1.5, -0.1, True, "0.9"])
def test_weight_average_decay_outside_0_1_is_refused(ema):
    with pytest.raises(UsageError, match="ema must be a number in"):
        TrainConfig.from_dict({"task": "mlm", "reference": "ref.fa", "ema": ema})


@pytest.mark.parametrize("lr", [1e38, 3.5e37, float("inf")])
def test_a_learning_rate_float32_cannot_apply_is_refused_before_training(lr):
    # 1e38 used to overflow float32 inside AdamW's update: an internal error (exit 1) instead of exit 2;
    # a large but representable rate still trains, to the non-finite loss check (exit 5, bad-input table H4)
    with pytest.raises(UsageError, match="lr must be at most 3.4e"):
        TrainConfig.from_dict({"task": "mlm", "reference": "ref.fa", "lr": lr})
    assert TrainConfig.from_dict({"task": "mlm", "reference": "ref.fa", "lr": 1e20}).lr == 1e20
