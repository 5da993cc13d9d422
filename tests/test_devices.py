"""--device is chosen one way for every command that runs a model: the same names, the same refusal of cuda
without a GPU, and bf16 autocast on CUDA only."""
from __future__ import annotations

import pytest
import torch

from genoformer.buckets.run import load_model
from genoformer.commands.attribute import attribute as attribute_command
from genoformer.commands.buckets import buckets as buckets_command
from genoformer.commands.predict import predict as predict_command
from genoformer.commands.score_variants import score_variants as score_variants_command
from genoformer.commands.train import train as train_command
from genoformer.devices import DEVICES, autocast, check_device, default_batch, resolve_device
from genoformer.errors import UsageError
from genoformer.predict.runner import PredictConfig
from genoformer.train import TrainConfig

GPU = torch.cuda.is_available()


def test_every_command_offers_the_same_devices():
    for command in (train_command, predict_command, buckets_command, score_variants_command, attribute_command):
        assert tuple(next(p for p in command.params if p.name == "device").type.choices) == DEVICES


def test_names_are_checked_the_same_way_everywhere():
    assert [check_device(name) for name in DEVICES] == list(DEVICES)
    for make in (lambda: TrainConfig(device="gpu"), lambda: PredictConfig(model="m", reference="r", device="gpu"),
                 lambda: resolve_device("gpu")):
        with pytest.raises(UsageError, match="device must be auto, cpu or cuda, got 'gpu'"):
            make()


def test_auto_takes_the_gpu_when_there_is_one():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if GPU else "cpu")


@pytest.mark.skipif(GPU, reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_a_usage_error_in_every_command(tmp_path):
    with pytest.raises(UsageError, match="no CUDA GPU") as err:
        resolve_device("cuda")
    assert "--device cpu" in err.value.hint
    with pytest.raises(UsageError, match="no CUDA GPU"):
        load_model(tmp_path / "never-read", device="cuda")  # refused before the model is looked for


@pytest.mark.gpu
def test_cuda_with_a_gpu_runs_bf16_under_autocast():
    device = resolve_device("cuda")
    x = torch.ones(4, 4, device=device)
    with autocast(device):
        assert (x @ x).dtype == torch.bfloat16


def test_the_cpu_runs_float32_under_autocast():
    x = torch.ones(4, 4)
    with autocast(torch.device("cpu")):
        assert (x @ x).dtype == torch.float32


def test_default_batches_are_small_on_the_cpu_and_never_empty():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert default_batch(1536, cpu) == 21 and default_batch(1536, gpu) == 170
    assert default_batch(4096, cpu) == 8
    assert default_batch(1_000_000, cpu) == default_batch(1_000_000, gpu) == 1
