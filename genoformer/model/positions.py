"""Rotary position embeddings (RoPE), computed on the fly.

Chosen over axial or learned tables because nothing is stored per position: a
1,048,576-token window costs no parameters, and scores depend only on relative
offsets, so a motif looks the same wherever a window happens to start.  Angles
are formed in float64 so that positions near 2**20 keep full precision.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from ..errors import UsageError


class Rotary(NamedTuple):
    """cos and sin [T, dim_head // 2] (float32) of T positions: computed once, shared by every layer."""

    cos: torch.Tensor
    sin: torch.Tensor


def rotary_angles(positions: torch.Tensor, dim_head: int, base: float = 10000.0) -> Rotary:
    """cos and sin of shape [T, dim_head // 2] (float32) for integer positions [T]."""
    if dim_head % 2:
        raise ValueError(f"rotary embeddings need an even head dimension, got {dim_head}")
    inv_freq = base ** (-torch.arange(0, dim_head, 2, dtype=torch.float64, device=positions.device) / dim_head)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    return Rotary(angles.cos().float(), angles.sin().float())


def resolve_rotary(positions: torch.Tensor | None, rotary: Rotary | None, length: int, dim_head: int,
                   device: torch.device) -> Rotary:
    """The rotary angles an attention layer uses: `rotary` as given (a caller that computed them once
    for all its layers), else those of `positions` [length] (default 0 .. length - 1)."""
    if rotary is not None:
        if positions is not None:
            raise UsageError("give positions or rotary angles, not both")
        if rotary.cos.shape != (length, dim_head // 2) or rotary.sin.shape != rotary.cos.shape:
            raise UsageError(f"rotary angles must have shape [{length}, {dim_head // 2}], got {list(rotary.cos.shape)}")
        return Rotary(rotary.cos.to(device), rotary.sin.to(device))
    positions = torch.arange(length, device=device) if positions is None else positions.to(device, torch.long)
    if positions.shape != (length,):
        raise UsageError(f"positions must have shape [{length}], got {list(positions.shape)}")
    return rotary_angles(positions, dim_head)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :d/2], x[..., d/2:]) of x [..., T, d] by the angles of each position."""
    return _Rotate.apply(x, cos.to(x.dtype), sin.to(x.dtype))


class _Rotate(torch.autograd.Function):
    """The rotation and its gradient (the rotation by minus the angles), each written straight into
    one new tensor: elementwise autograd would hold six half-size temporaries and a concatenation."""

    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        return _rotate(x, cos, sin, 1)

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        return _rotate(grad, cos, sin, -1), None, None


def rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, inverse: bool = False,
           out: torch.Tensor | None = None) -> torch.Tensor:
    """apply_rotary without autograd (or its inverse, the rotation by minus the angles), into `out` if given."""
    return _rotate(x, cos.to(x.dtype), sin.to(x.dtype), -1 if inverse else 1, out)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: int,
            out: torch.Tensor | None = None) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    if out is None:
        out = torch.empty(torch.broadcast_shapes(x.shape, (*cos.shape[:-1], x.shape[-1])), dtype=x.dtype,
                          device=x.device)
    out1, out2 = out[..., :half], out[..., half:]
    torch.mul(x1, cos, out=out1).addcmul_(x2, sin, value=-sign)
    torch.mul(x2, cos, out=out2).addcmul_(x1, sin, value=sign)
    return out
