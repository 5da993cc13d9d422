"""How long-window code cuts its work: many small pieces on a CPU, a few large ones on an accelerator.

The piece sizes in model/ and model/fast/ (feed-forward chunks, local-attention chunks, LSH head
groups, the LSH kernel's pieces and blocks, hashing one round at a time) were tuned on a 2-core CPU:
each piece's buffers stay a few MB, which glibc's heap and the caches serve, where a fresh mmapped
tensor page-faults in (docs/benchmarks.md).  On a GPU each piece costs a handful of kernel launches,
each some microseconds of CPU time however small the piece, and a million-token window cut the
CPU's way (thousands of pieces a layer) would leave the GPU waiting on Python.  So each size has a
large twin there, sized to hold a whole 1 Mb window's heads at once in a few hundred MB per buffer.
Sizes change memory and speed, never the function: tests/model/fast run both sizings on a CPU.

`small_pieces` is the one predicate.  Tests set SMALL_PIECE_DEVICES to () to run the accelerator's
path on a CPU; it also turns off the CPU-only fused attention kernels, as on a GPU.
"""
from __future__ import annotations

import torch

SMALL_PIECE_DEVICES: tuple[str, ...] = ("cpu",)  # device types that get the CPU's piece sizes


def small_pieces(device: torch.device) -> bool:
    """Whether code on `device` cuts its work into the CPU's small pieces."""
    return device.type in SMALL_PIECE_DEVICES


def piece_size(device: torch.device, small: int, large: int) -> int:
    """`small` where small_pieces(device), else `large`."""
    return small if small_pieces(device) else large
