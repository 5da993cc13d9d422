"""Where models run, chosen one way for train, predict and buckets: --device auto | cpu | cuda.

auto takes the GPU when there is one; cuda without a GPU is a usage error rather than a silent
fall-back to the CPU (a run sized for a GPU could take days there). On CUDA the forward passes run
under bf16 autocast; on the CPU in float32. torch is imported on first use, so the CLI's option
lists read DEVICES without it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from genoformer.errors import UsageError

if TYPE_CHECKING:
    import contextlib

    import torch

DEVICES = ("auto", "cpu", "cuda")
# Bases per forward pass when no --batch-size is given. A GPU wants large batches. On the CPU, batches
# of 100k+ bases ran 1.4-1.6x slower per base than ~16 windows of 1-4 kb (docs/benchmarks.md, "Batch
# size on the CPU"): glibc maps tensors that large afresh and unmaps them at every free, so page
# faults cost as much as the arithmetic.
BATCH_BASES_CPU = 32_768
BATCH_BASES_GPU = 262_144


def check_device(name: str) -> str:
    """`name` if it is one of DEVICES; UsageError otherwise."""
    if name not in DEVICES:
        raise UsageError(f"device must be {', '.join(DEVICES[:-1])} or {DEVICES[-1]}, got {name!r}")
    return name


def resolve_device(name: str) -> torch.device:
    """The torch device of --device `name`; UsageError for cuda on a machine without a CUDA GPU."""
    import torch

    check_device(name)
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device cuda requested but no CUDA GPU is available", hint="use --device cpu or auto")
    return torch.device("cuda" if name != "cpu" and torch.cuda.is_available() else "cpu")


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on a CUDA device; does nothing on the CPU."""
    import torch

    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def default_batch(n_bases: int, device: torch.device) -> int:
    """Sequences of `n_bases` per forward pass on `device` when the user gives no batch size."""
    return max(1, (BATCH_BASES_CPU if device.type == "cpu" else BATCH_BASES_GPU) // n_bases)
