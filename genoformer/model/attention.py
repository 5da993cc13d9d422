"""Full and local (sliding-window) self-attention, with the same interface as LSHSelfAttention.

Every attention module maps x [B, T, d_model] to [B, T, d_model], takes a padding mask
(bool [B, T], True = real token) and absolute token positions for rotary embeddings, so a
Reformer can mix kinds per layer.  Padding is masked as keys only; a query with no key left
(a padding query in an all-padding window) attends to itself so its output stays finite.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .positions import apply_rotary, rotary_angles


def mask_value(dtype: torch.dtype) -> float:
    """Most negative finite score of dtype: masked logits underflow to 0 without inf - inf = NaN."""
    return torch.finfo(dtype).min


def _default_positions(positions: Tensor | None, T: int, device: torch.device) -> Tensor:
    if positions is None:
        return torch.arange(T, device=device)
    if positions.shape != (T,):
        raise ValueError(f"positions must have shape [{T}], got {list(positions.shape)}")
    return positions.to(device=device, dtype=torch.long)


class _ProjectedAttention(nn.Module):
    """Shared q/k/v/out projections and rotary; subclasses implement `_attend`."""

    def __init__(self, d_model: int, heads: int, *, causal: bool = False, dropout: float = 0.0):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by heads ({heads})")
        self.heads, self.dim_head = heads, d_model // heads
        self.causal, self.dropout = causal, dropout
        self.to_q = nn.Linear(d_model, d_model, bias=False)
        self.to_k = nn.Linear(d_model, d_model, bias=False)
        self.to_v = nn.Linear(d_model, d_model, bias=False)
        self.to_out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, mask: Tensor | None = None, positions: Tensor | None = None) -> Tensor:
        B, T, _ = x.shape
        split = lambda t: t.view(B, T, self.heads, self.dim_head).transpose(1, 2)  # (B, h, T, dh)
        q, k, v = split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x))
        cos, sin = rotary_angles(_default_positions(positions, T, x.device), self.dim_head)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = self._attend(q, k, v, None if mask is None else mask.to(device=x.device, dtype=torch.bool))
        return self.to_out(out.transpose(1, 2).reshape(B, T, -1))

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        raise NotImplementedError


class FullAttention(_ProjectedAttention):
    """Quadratic attention over the whole window via torch's scaled_dot_product_attention."""

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        p = self.dropout if self.training else 0.0
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal)
        T = q.shape[-2]
        allowed = mask[:, None, None, :]  # (B, 1, 1, T): broadcast, no T x T tensor in the common case
        if self.causal or not bool(mask.any(-1).all()):
            idx = torch.arange(T, device=q.device)
            if self.causal:
                allowed = allowed & (idx[None, :] <= idx[:, None])
            allowed = allowed | ((idx[None, :] == idx[:, None]) & ~allowed.any(-1, keepdim=True))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)


class LocalAttention(_ProjectedAttention):
    """Each query attends to keys in its own block of `window_size` and the previous block.

    With causal=True only keys at or before the query count.  Keys per query (2 * window_size)
    match an LSH chunk plus its previous chunk when window_size == bucket_size.  Any length is
    accepted: the sequence is padded internally to a multiple of window_size.
    """

    def __init__(self, d_model: int, heads: int, *, causal: bool = False, dropout: float = 0.0,
                 window_size: int = 128):
        super().__init__(d_model, heads, causal=causal, dropout=dropout)
        if window_size < 1:
            raise ValueError(f"window_size must be >= 1, got {window_size}")
        self.window_size = window_size

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        B, H, T, dh = q.shape
        w = self.window_size
        pad = -T % w
        n = (T + pad) // w
        real = torch.ones(B, T, dtype=torch.bool, device=q.device) if mask is None else mask
        if pad:
            q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
            real = F.pad(real, (0, pad), value=False)

        def with_previous(t: Tensor) -> Tensor:
            # (..., n, w, c) -> (..., n, 2w, c): block i sees block i-1 (zeros before block 0), then itself
            prev = torch.cat((torch.zeros_like(t[..., :1, :, :]), t[..., :-1, :, :]), dim=-3)
            return torch.cat((prev, t), dim=-2)

        qb = q.reshape(B, H, n, w, dh)
        kb = with_previous(k.reshape(B, H, n, w, dh))
        vb = with_previous(v.reshape(B, H, n, w, dh))
        qpos = torch.arange(n * w, device=q.device).view(n, w, 1)
        kpos = with_previous(qpos).view(n, 1, 2 * w)
        # block 0's "previous block" is zero padding, marked not real here
        allowed = with_previous(real.view(B, n, w, 1)).view(B, 1, n, 1, 2 * w)
        if self.causal:
            allowed = allowed & (kpos <= qpos)
        own = torch.arange(2 * w, device=q.device) >= w  # key slot lies in the query's own block
        is_self = own & (kpos == qpos)
        allowed = allowed | (is_self & ~allowed.any(-1, keepdim=True))

        scores = (qb * dh ** -0.5) @ kb.transpose(-1, -2)  # (B, H, n, w, 2w)
        scores = scores.float().masked_fill_(~allowed, mask_value(torch.float32))  # softmax in fp32 under autocast
        attn = scores.softmax(dim=-1).to(vb.dtype)
        attn = F.dropout(attn, self.dropout, training=self.training)
        out = (attn @ vb).reshape(B, H, n * w, dh)
        return out[:, :, :T]
