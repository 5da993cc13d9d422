"""torchrun support: join the process group torchrun describes in the environment (one process otherwise).

Each rank reads its own slice of every batch from the one seeded window stream, so the run is the same
whatever the number of ranks reading it; rank 0 alone writes logs, checkpoints and the summary.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) when not started by torchrun."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init(device: torch.device) -> bool:
    """Join torchrun's process group (gloo on CPU, nccl on GPU); True when this call created it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return True


def local_device(device: torch.device) -> torch.device:
    """This rank's device: its LOCAL_RANK GPU under torchrun on CUDA."""
    if device.type == "cuda" and world()[1] > 1:
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return device


def mean(value: float, device: torch.device) -> float:
    """The mean of a number over all ranks (the number itself in one process)."""
    if world()[1] == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t) / world()[1]


def close() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
