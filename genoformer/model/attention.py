"""Full and local (sliding-window) self-attention, with the same interface as LSHSelfAttention.

Every attention module maps x [B, T, d_model] to [B, T, d_model], takes a padding mask
(bool [B, T], True = real token) and absolute token positions for rotary embeddings, so a
Reformer can mix kinds per layer.  Padding is masked as keys only; a query with no key left
(a padding query in an all-padding window) attends to itself so its output stays finite.
Dropout, as in LSHSelfAttention, applies to the output projection, not to attention weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .positions import Rotary, apply_rotary, resolve_rotary
from .sizing import piece_size


def mask_value(dtype: torch.dtype) -> float:
    """Most negative finite score of dtype: masked logits underflow to 0 without inf - inf = NaN."""
    return torch.finfo(dtype).min


class _ProjectedAttention(nn.Module):
    """Shared q/k/v/out projections and rotary; subclasses implement `_attend` on [B, T, heads, dim_head]."""

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

    def forward(self, x: Tensor, mask: Tensor | None = None, positions: Tensor | None = None,
                rotary: Rotary | None = None) -> Tensor:
        """x [B, T, d_model] -> [B, T, d_model].  positions [T] (default 0 .. T - 1), or their rotary angles."""
        B, T, _ = x.shape
        # heads stay in the Linear's own layout (B, T, h, dh): no full-size transposed copies
        split = lambda t: t.view(B, T, self.heads, self.dim_head)
        q, k, v = split(self.to_q(x)), split(self.to_k(x)), split(self.to_v(x))
        cos, sin = resolve_rotary(positions, rotary, T, self.dim_head, x.device)
        cos, sin = cos[:, None], sin[:, None]  # (T, 1, dh/2): broadcast over heads
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        out = self._attend(q, k, v, None if mask is None else mask.to(device=x.device, dtype=torch.bool))
        return F.dropout(self.to_out(out.reshape(B, T, -1)), self.dropout, self.training)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        raise NotImplementedError


class FullAttention(_ProjectedAttention):
    """Quadratic attention over the whole window via torch's scaled_dot_product_attention."""

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # (B, h, T, dh)
        if mask is None:
            return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal).transpose(1, 2)
        T = q.shape[-2]
        allowed = mask[:, None, None, :]  # (B, 1, 1, T): broadcast, no T x T tensor in the common case
        if self.causal or not bool(mask.any(-1).all()):
            idx = torch.arange(T, device=q.device)
            if self.causal:
                allowed = allowed & (idx[None, :] <= idx[:, None])
            allowed = allowed | ((idx[None, :] == idx[:, None]) & ~allowed.any(-1, keepdim=True))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=allowed).transpose(1, 2)


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
        B, T, H, dh = q.shape
        w = self.window_size
        pad = -T % w
        n = (T + pad) // w
        real = torch.ones(B, T, dtype=torch.bool, device=q.device) if mask is None else mask
        if pad:
            q, k, v = (F.pad(t, (0, 0, 0, 0, 0, pad)) for t in (q, k, v))
            real = F.pad(real, (0, pad), value=False)
        blocks = lambda t: t.reshape(B, n, w, H, dh)
        out = _LocalAttentionFunction.apply(blocks(q), blocks(k), blocks(v), real.view(B, n, w), self.causal)
        return out.view(B, n * w, H, dh)[:, :T]


CHUNK_SCORES = 2 ** 22  # score elements per chunk of blocks: caps the working memory of local attention
LARGE_CHUNK_SCORES = 2 ** 26  # on an accelerator (sizing.py): 256 MiB of float32 scores


class _LocalAttentionFunction(torch.autograd.Function):
    """Block-local attention that keeps only q, k, v, the output and per-query log-sum-exp, and
    recomputes scores chunk by chunk in backward (as flash attention does): O(T * d) memory.

    q, k, v: [B, n, w, H, dh] (blocks of w tokens); real: bool [B, n, w] (keys that are tokens).
    Computes in the inputs' dtype with softmax statistics in at least float32, whatever the autocast state.
    """

    @staticmethod
    def forward(ctx, q, k, v, real, causal: bool):
        out = torch.empty_like(q)
        B, n, w, H, _ = q.shape
        lse = torch.empty(B, H, n, w, dtype=_stats_dtype(q), device=q.device)
        with torch.autocast(q.device.type, enabled=False):
            for start, stop in _block_chunks(q):
                scores = _scores(q, k, real, start, stop, causal)
                lse_c = scores.logsumexp(-1, keepdim=True)
                probs = scores.sub_(lse_c).exp_().to(v.dtype)
                out[:, start:stop] = (probs @ _heads_first(_with_previous(v, start, stop))).permute(0, 2, 3, 1, 4)
                lse[:, :, start:stop] = lse_c.squeeze(-1)
        ctx.save_for_backward(q, k, v, real, out, lse)
        ctx.causal = causal
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, real, out, lse = ctx.saved_tensors
        dq, dk, dv = torch.zeros_like(q), torch.zeros_like(k), torch.zeros_like(v)
        scale = q.shape[-1] ** -0.5
        acc = _stats_dtype(q)
        with torch.autocast(q.device.type, enabled=False):
            dout = dout.to(q.dtype)
            delta = (dout.to(acc) * out.to(acc)).sum(-1).permute(0, 3, 1, 2)  # rowsum(dO * O): (B, H, n, w)
            for start, stop in _block_chunks(q):
                probs = _scores(q, k, real, start, stop, ctx.causal).sub_(lse[:, :, start:stop, :, None]).exp_()
                dout_c, q_c = _heads_first(dout[:, start:stop]), _heads_first(q[:, start:stop])
                k_w, v_w = _heads_first(_with_previous(k, start, stop)), _heads_first(_with_previous(v, start, stop))
                _add_with_previous(dv, probs.to(v.dtype).transpose(-1, -2) @ dout_c, start, stop)
                dprobs = (dout_c @ v_w.transpose(-1, -2)).to(acc)
                dscores = probs.mul_(dprobs.sub_(delta[:, :, start:stop, :, None])).mul_(scale).to(q.dtype)
                dq[:, start:stop] = (dscores @ k_w).permute(0, 2, 3, 1, 4)
                _add_with_previous(dk, dscores.transpose(-1, -2) @ q_c, start, stop)
        return dq, dk, dv, None, None


def _stats_dtype(q: Tensor) -> torch.dtype:
    return torch.promote_types(q.dtype, torch.float32)


def _block_chunks(q: Tensor) -> list[tuple[int, int]]:
    B, n, w, H, _ = q.shape
    step = max(1, piece_size(q.device, CHUNK_SCORES, LARGE_CHUNK_SCORES) // (B * H * w * 2 * w))
    return [(start, min(start + step, n)) for start in range(0, n, step)]


def _heads_first(t: Tensor) -> Tensor:
    """[B, c, w, H, dh] -> [B, H, c, w, dh] (a view)."""
    return t.permute(0, 3, 1, 2, 4)


def _with_previous(t: Tensor, start: int, stop: int) -> Tensor:
    """Blocks start..stop of t [B, n, w, ...], each preceded by the block before it (zeros before block 0)."""
    own = t[:, start:stop]
    prev = t[:, start - 1:stop - 1] if start else torch.cat((torch.zeros_like(t[:, :1]), t[:, :stop - 1]), 1)
    return torch.cat((prev, own), dim=2)


def _add_with_previous(target: Tensor, grads: Tensor, start: int, stop: int) -> None:
    """Inverse of _with_previous: add grads [B, H, c, 2w, dh] into target [B, n, w, H, dh] (zero block dropped)."""
    w = grads.shape[-2] // 2
    grads = grads.permute(0, 2, 3, 1, 4)  # (B, c, 2w, H, dh)
    target[:, start:stop] += grads[:, :, w:]
    lo = max(start - 1, 0)
    target[:, lo:stop - 1] += grads[:, lo - start + 1:, :w]


def _allowed(real: Tensor, start: int, stop: int, causal: bool) -> Tensor:
    """[B, 1, c, w, 2w] which keys each query of blocks start..stop may see (itself, if nothing else)."""
    B, _, w = real.shape
    key_real = _with_previous(real, start, stop).view(B, 1, stop - start, 1, 2 * w)
    block_start = torch.arange(start, stop, device=real.device).view(-1, 1, 1) * w
    qpos = block_start + torch.arange(w, device=real.device).view(1, w, 1)
    kpos = block_start + torch.arange(-w, w, device=real.device).view(1, 1, 2 * w)
    allowed = key_real & (kpos <= qpos) if causal else key_real
    return allowed | ((kpos == qpos) & ~allowed.any(-1, keepdim=True))


def _scores(q: Tensor, k: Tensor, real: Tensor, start: int, stop: int, causal: bool) -> Tensor:
    """[B, H, c, w, 2w] scaled scores (at least float32) of blocks start..stop against their window, masked finite."""
    q_c = _heads_first(q[:, start:stop]) * q.shape[-1] ** -0.5
    scores = (q_c @ _heads_first(_with_previous(k, start, stop)).transpose(-1, -2)).to(_stats_dtype(q))
    return scores.masked_fill_(~_allowed(real, start, stop, causal), mask_value(scores.dtype))
