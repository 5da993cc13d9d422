"""Named scratch buffers reused across the calls of one pass.

A fresh tensor of SHARED_BYTES or more comes from mmap (genoformer.allocator) and page-faults in
on first touch, many times the cost of writing into memory already mapped (docs/benchmarks.md).
Long-window attention makes many such tensors of the same few shapes (one head's [T, dim_head]
rows, sorted copies, gradients), so code that runs the same shapes again and again (the blocks
and rounds of one kernel call, every LSH block and head group of one reversible pass, forward
and backward) takes them from a Workspace instead.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor


SHARED_BYTES = 2 ** 24  # Workspace.scope: the size from which genoformer.allocator has glibc mmap a tensor


class Workspace:
    """Buffers by name: get() returns a view of the named buffer, growing it when too small.

    A buffer is overwritten by the next get() of its name, so a name must only be given to
    values whose lifetimes do not overlap; code handed a workspace names its buffers within a
    scope() of its own.
    """

    def __init__(self, device: torch.device, shared: Workspace | None = None, prefix: str = ""):
        self.device, self.buffers, self.shared, self.prefix = device, {}, shared, prefix

    def scope(self, prefix: str) -> Workspace:
        """A workspace for one call: buffers of SHARED_BYTES or more come from this one, named prefix + name,
        and outlive the call; smaller ones are the call's own.  Small buffers are heap-served (no page
        faults to save) and, kept for long, would pin the heap under them."""
        return Workspace(self.device, shared=self, prefix=prefix)

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        numel = math.prod(shape)
        if self.shared is not None and numel * dtype.itemsize >= SHARED_BYTES:
            return self.shared.get(self.prefix + name, shape, dtype)
        buffer = self.buffers.get(name)
        if buffer is None or buffer.numel() < numel or buffer.dtype != dtype:
            self.buffers.pop(name, None)  # free the old one before allocating its successor
            buffer = self.buffers[name] = torch.empty(numel, dtype=dtype, device=self.device)
        return buffer[:numel].view(shape)

    def release(self, prefix: str) -> None:
        """Free the buffers whose names start with prefix (when something larger is about to be made)."""
        for name in [name for name in self.buffers if name.startswith(prefix)]:
            del self.buffers[name]

    def arange(self, n: int) -> Tensor:
        """0 .. n - 1 (int64), made once."""
        made = self.buffers.get("arange")
        if made is None or made.numel() < n:
            made = self.buffers["arange"] = torch.arange(n, device=self.device)
        return made[:n]

    def rows(self, t: Tensor, name: str) -> Tensor:
        """t itself when contiguous, else a contiguous copy of it in the buffer `name`."""
        if t.is_contiguous():
            return t
        return self.get(name, tuple(t.shape), t.dtype).copy_(t)
