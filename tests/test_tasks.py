"""The task registry is the one list of tasks: the CLI offers it, TrainConfig accepts it, the model grows
the head it names, validation reports its main metric, and predict writes exactly its per-base tasks,
with its activation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genoformer.commands.train import train as train_command
from genoformer.errors import UsageError
from genoformer.io.predictions import read_predictions
from genoformer.model.checkpoint import save_checkpoint
from genoformer.model.config import ReformerConfig
from genoformer.model.heads import GenoModel
from genoformer.predict.runner import PredictConfig, predict
from genoformer.tasks import (PER_BASE, PER_RESIDUE, PER_SEQUENCE, PREDICTED, SIGMOID, SOFTMAX, TASK_INPUTS, TASKS,
                              TOKEN_LOGITS, TRAIN_TASKS, head_task, refused_inputs)
from genoformer.tokenize import KmerTokenizer
from genoformer.train import TrainConfig
from genoformer.train.metrics import metrics

from fasta_factory import write_fasta

TOKENIZER = KmerTokenizer(k=3)
N_CLASSES, WINDOW = 3, 48


def test_the_cli_offers_the_trainable_tasks_and_train_config_accepts_only_those():
    choices = next(p for p in train_command.params if p.name == "task").type.choices
    assert tuple(choices) == TRAIN_TASKS == ("mlm", "variant", "pattern", "classify")
    for name in TRAIN_TASKS:
        assert TrainConfig(task=name).task == name
    with pytest.raises(UsageError, match="unknown task 'classify_residues'; use one of mlm, variant, pattern, classify"):
        TrainConfig(task="classify_residues")  # a head that --task classify grows, not a --task


def test_head_tasks_and_inputs():
    assert head_task("classify", per_residue=True) == "classify_residues"
    assert head_task("classify") == "classify" and head_task("variant") == "variant"
    assert set(TASK_INPUTS) == {name for task in TASKS.values() for name in task.inputs}
    assert "sequences" in refused_inputs("mlm") and "reference" in refused_inputs("classify")
    assert "bed" in refused_inputs("variant") and "truth_vcf" in refused_inputs("pattern")
    for name in TRAIN_TASKS:
        assert not set(refused_inputs(name)) & set(TASKS[name].inputs)


def model(task: str) -> GenoModel:
    config = ReformerConfig(vocab_size=TOKENIZER.vocab_size, d_model=8, depth=1, heads=2, attention="full")
    return GenoModel(config, TOKENIZER, task, n_classes=0 if TASKS[task].head == TOKEN_LOGITS else N_CLASSES)


@pytest.mark.parametrize("task", list(TASKS))
def test_the_model_grows_the_head_the_registry_names(task):
    tokens = torch.from_numpy(TOKENIZER.encode("ACGT" * (WINDOW // 4)))[None]
    out = model(task).eval()(tokens, torch.ones_like(tokens, dtype=torch.bool), n_bases=WINDOW)
    expected = {TOKEN_LOGITS: (1, tokens.shape[1], TOKENIZER.vocab_size), PER_SEQUENCE: (1, N_CLASSES),
                PER_BASE: (1, WINDOW, N_CLASSES), PER_RESIDUE: (1, WINDOW, N_CLASSES)}[TASKS[task].head]
    assert tuple(out.shape) == expected


def test_a_task_outside_the_registry_has_no_model():
    config = ReformerConfig(vocab_size=TOKENIZER.vocab_size, d_model=8, depth=1, heads=2, attention="full")
    with pytest.raises(ValueError, match="unknown task 'expression'"):
        GenoModel(config, TOKENIZER, "expression", n_classes=2)


def _outputs(task: str) -> list[dict]:
    """Validation outputs of the shape losses.forward_loss returns for `task`, with every class present."""
    gen = torch.Generator().manual_seed(0)
    if task == "pattern":  # the real bases' logits and 0/1 targets, [N, classes]
        # both classes hold positives and negatives (rows alternate), so AUROC and AUPRC are defined
        return [{"logits": torch.randn(30, 2, generator=gen), "target": (torch.arange(60).view(30, 2) // 2).remainder(2.0)}]
    n_classes = TOKENIZER.vocab_size if task == "mlm" else N_CLASSES
    shape = (4,) if task == "classify" else (2, 10)
    return [{"logits": torch.randn(*shape, n_classes, generator=gen),
             "target": torch.arange(math.prod(shape)).view(shape) % N_CLASSES}]


@pytest.mark.parametrize("task", TRAIN_TASKS)
def test_validation_reports_each_task_main_metric(task):
    scores = metrics(task, _outputs(task))
    assert TASKS[task].metric in scores and 0 <= scores[TASKS[task].metric] <= 1


@pytest.mark.parametrize("task", list(TASKS))
def test_predict_writes_exactly_the_per_base_tasks_with_their_activation(task, tmp_path):
    rng = np.random.default_rng(1)
    reference = tmp_path / "ref.fa"
    write_fasta(reference, {"chrA": "".join(rng.choice(list("ACGT"), 200))})
    net = model(task)
    n_classes = 0 if TASKS[task].head == TOKEN_LOGITS else N_CLASSES
    head = {"n_classes": n_classes, "n_evidence": 0, "class_names": [f"c{i}" for i in range(n_classes)]}
    save_checkpoint(tmp_path / "run", net, {"step": 1, "head": head, "train_config": {"window": WINDOW}}, {})
    config = PredictConfig(model=str(tmp_path / "run"), reference=str(reference), out=str(tmp_path / "p.h5"),
                           device="cpu", progress=False)
    if task not in PREDICTED:
        assert TASKS[task].predict is None
        with pytest.raises(UsageError, match=f"this {task} model .* has nothing per-base to write"):
            predict(config)
        assert not (tmp_path / "p.h5").exists()
        return
    predict(config)
    probs = read_predictions(tmp_path / "p.h5", "chrA").probs.astype(np.float64)
    assert probs.shape == (200, N_CLASSES) and ((probs > 0) & (probs < 1)).all()
    sums = probs.sum(1)
    if TASKS[task].predict == SOFTMAX:  # genotypes exclude each other
        np.testing.assert_allclose(sums, 1, atol=3e-3)
    else:
        assert TASKS[task].predict == SIGMOID and np.abs(sums - 1).max() > 0.05  # classes on their own
