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
