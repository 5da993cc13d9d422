"""Rotary position embeddings (RoPE), computed on the fly.

Chosen over axial or learned tables because nothing is stored per position: a
1,048,576-token window costs no parameters, and scores depend only on relative
offsets, so a motif looks the same wherever a window happens to start.  Angles
are formed in float64 so that positions near 2**20 keep full precision.
"""
from __future__ import annotations

import torch


def rotary_angles(positions: torch.Tensor, dim_head: int, base: float = 10000.0) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of shape [T, dim_head // 2] (float32) for integer positions [T]."""
    if dim_head % 2:
        raise ValueError(f"rotary embeddings need an even head dimension, got {dim_head}")
    inv_freq = base ** (-torch.arange(0, dim_head, 2, dtype=torch.float64, device=positions.device) / dim_head)
    angles = positions.to(torch.float64)[:, None] * inv_freq[None, :]
    return angles.cos().float(), angles.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x[..., :d/2], x[..., d/2:]) of x [..., T, d] by the angles of each position."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1)
