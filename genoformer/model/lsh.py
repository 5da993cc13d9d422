"""LSH self-attention (Reformer, Kitaev et al. 2020, https://openreview.net/pdf?id=rkgNKkHtvB).

Queries and keys share one projection; keys are the L2-normalised queries.  Each of n_hashes
rounds hashes the tokens into buckets by angular LSH with random rotations (lsh_hashing.py),
sorts them by (bucket, position), cuts that order into chunks of bucket_size and lets each
chunk attend to itself and the chunk before it (lsh_chunks.py states the exact rule).  Rounds
combine by their log-sum-exp: one softmax over the union of every round's keys, a key counted
once per round it appears in (as HF and reformer-pytorch do).  Hashing uses the query before
rotary positions, so the same content at distant loci can share a bucket; scores use the
rotary-rotated query and key.

Buckets per round follow each sequence's real length (mask.sum), not the padded length, and
padding is sorted after every real token: appending padding, or batching a sequence with
longer ones, changes nothing at its real positions.

Rotations come from a generator seeded per call: `hash_seed` when set (deterministic
inference), otherwise one seed drawn from torch's global CPU RNG, which the reversible stack
replays so that the backward recomputation sees the same buckets.

The chunk attention is a function the module is given, its `kernel` (a ChunkAttention):
`chunk_attention` below, the plain reference, by default.  It keeps every chunk's scores for autograd; the
Reformer gives its layers the memory-efficient kernel (model/fast/lsh_kernels.py), which
computes the same function.  Buckets and top attended keys: lsh_inspect.py.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from .lsh_chunks import SELF_SCORE, last_chunk, lookback, looks_back
from .lsh_hashing import bucket_factors, hash_buckets, sort_order
from .positions import Rotary, apply_rotary, resolve_rotary


class ChunkAttention(Protocol):
    """Chunked attention over an LSH sort order: q, k, v [B, H, T, dh]; order [B, H, n_hashes, Tp] (each
    round a permutation of 0 .. Tp - 1, Tp = T rounded up to a multiple of bucket_size, real tokens
    first); real bool [B, T] (None: no padding).  Returns [B, H, T, dh] in v's dtype, zero at padding."""

    def __call__(self, q: Tensor, k: Tensor, v: Tensor, order: Tensor, real: Tensor | None, causal: bool,
                 bucket_size: int) -> Tensor: ...


class Hashed(NamedTuple):
    """One call's projections and hashing, for the heads asked for."""
    q: Tensor  # [B, heads, T, dh], rotary applied
    k: Tensor  # unit-length q
    v: Tensor
    order: Tensor  # [B, heads, n_hashes, T padded to a multiple of bucket_size]
    real: Tensor  # bool [B, T]
    buckets: Tensor | None  # [B, heads, n_hashes, T], -1 at padding (None: the order was given)
    counts: Tensor | None  # buckets per round of each sequence [B]
    seed: int | None


class LSHSelfAttention(nn.Module):
    """x [B, T, d_model] -> [B, T, d_model]; any T and padding mask (bool [B, T], True = real).

    Dropout, when set, applies to the output projection (replayed by the reversible stack
    through the global RNG); attention weights are not dropped.
    """

    def __init__(self, d_model: int, heads: int, *, causal: bool = False, dropout: float = 0.0,
                 bucket_size: int = 64, n_hashes: int = 4, hash_seed: int | None = None,
                 kernel: ChunkAttention | None = None):
        super().__init__()
        if d_model % heads or (d_model // heads) % 2:
            raise UsageError(f"d_model ({d_model}) must be divisible by heads ({heads}) into an even head size")
        if bucket_size < 1 or n_hashes < 1:
            raise UsageError(f"bucket_size and n_hashes must be >= 1, got {bucket_size} and {n_hashes}")
        self.heads, self.dim_head = heads, d_model // heads
        self.causal, self.dropout = causal, dropout
        self.bucket_size, self.n_hashes, self.hash_seed = bucket_size, n_hashes, hash_seed
        self.kernel = chunk_attention if kernel is None else kernel  # a function, not a submodule: no weights
        self.to_qk = nn.Linear(d_model, d_model, bias=False)
        self.to_v = nn.Linear(d_model, d_model, bias=False)
        self.to_out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, mask: Tensor | None = None, positions: Tensor | None = None,
                rotary: Rotary | None = None) -> Tensor:
        """x [B, T, d_model] -> [B, T, d_model].  positions [T] (default 0 .. T - 1), or their rotary angles."""
        out = self.to_out(self.attend(x, mask, positions, rotary=rotary))
        return F.dropout(out, self.dropout, training=self.training)

    def attend(self, x: Tensor, mask: Tensor | None = None, positions: Tensor | None = None,
               heads: slice | None = None, rotary: Rotary | None = None) -> Tensor:
        """The attention output of `heads` (default all) before the output projection: [B, T, heads * dim_head].

        Heads are independent, so attending a group at a time gives column blocks of the whole.
        Groups draw the hash seed as a whole call does: replay the RNG state before each one.
        """
        B, T, _ = x.shape
        h = self.hashed(x, mask, positions, heads, rotary)
        out = self.kernel(h.q, h.k, h.v, h.order, None if mask is None else h.real, self.causal, self.bucket_size)
        return out.transpose(1, 2).reshape(B, T, -1)

    def hashed(self, x: Tensor, mask: Tensor | None = None, positions: Tensor | None = None,
               heads: slice | None = None, rotary: Rotary | None = None) -> Hashed:
        """Projections, buckets and sort order of `heads` (default all), under autograd."""
        real = self.real(x, mask)
        cos, sin = resolve_rotary(positions, rotary, x.shape[1], self.dim_head, x.device)
        heads = slice(0, self.heads) if heads is None else heads
        qk, v = self.project(x, heads)
        order, buckets, counts, seed = self.sort(qk, real, heads)
        q = apply_rotary(qk.to(v.dtype), cos, sin)
        k = unit_length(q.to(torch.promote_types(q.dtype, torch.float32))).to(q.dtype)  # rotary keeps norms
        return Hashed(q, k, v, order, real, buckets, counts, seed)

    def real(self, x: Tensor, mask: Tensor | None) -> Tensor:
        """Which tokens of x [B, T, d] are real: bool [B, T]."""
        B, T, _ = x.shape
        real = torch.ones(B, T, dtype=torch.bool, device=x.device) if mask is None else mask.to(x.device, torch.bool)
        if real.shape != (B, T):
            raise UsageError(f"mask must have shape [{B}, {T}], got {list(real.shape)}")
        return real

    def rows(self, heads: slice) -> slice:
        """The projections' rows (output features) of `heads`."""
        return slice(heads.start * self.dim_head, heads.stop * self.dim_head)

    def split(self, t: Tensor) -> Tensor:
        """[B, T, h * dim_head] -> [B, h, T, dim_head]."""
        return t.view(*t.shape[:2], -1, self.dim_head).transpose(1, 2)

    def project(self, x: Tensor, heads: slice) -> tuple[Tensor, Tensor]:
        """The shared query/key and the value of `heads`, [B, h, T, dim_head] each.  The query/key is float32
        even under autocast, so buckets do not depend on precision."""
        rows = self.rows(heads)
        precise = torch.promote_types(x.dtype, torch.float32)
        if x.dtype == precise and not torch.is_autocast_enabled(x.device.type):
            # both in one matmul, and so one matmul for their input gradient in backward; split's
            # gradient is one cat, not two zero-padded copies
            both = F.linear(x, torch.cat((self.to_qk.weight[rows], self.to_v.weight[rows])))
            return tuple(map(self.split, both.split(rows.stop - rows.start, dim=-1)))
        with torch.autocast(x.device.type, enabled=False):
            qk = self.split(F.linear(x.to(precise), self.to_qk.weight[rows].to(precise)))
        return qk, self.split(F.linear(x, self.to_v.weight[rows]))

    def sort(self, qk: Tensor, real: Tensor, heads: slice) -> tuple[Tensor, Tensor, Tensor, int]:
        """The sort order of every round, from the hash seed (drawn from the global RNG unless hash_seed is set),
        the buckets of qk [B, h, T, dh] and their counts per sequence: (order, buckets, counts, seed)."""
        T = qk.shape[2]
        seed = self.hash_seed if self.hash_seed is not None else int(torch.randint(0, 2 ** 62, (1,)).item())
        buckets, counts = self._hash(qk, real, seed, heads)
        order = sort_order(buckets, real, math.ceil(max(T, 1) / self.bucket_size) * self.bucket_size)
        return order, buckets, counts, seed

    def _hash(self, qk: Tensor, real: Tensor, seed: int, heads: slice) -> tuple[Tensor, Tensor]:
        """Bucket ids [B, h, R, T] (-1 at padding) with each sequence's bucket count from its real length."""
        B, H, T, _ = qk.shape
        lengths = real.sum(-1)
        counts = torch.empty(B, dtype=torch.long)
        unique = lengths.unique().tolist()
        if unique == [T]:  # no padding: one hash of the whole batch
            factors = bucket_factors(T, self.bucket_size)
            return hash_buckets(qk, factors, self.n_hashes, seed, heads, self.heads), counts.fill_(math.prod(factors))
        buckets = torch.full((B, H, self.n_hashes, T), -1, dtype=torch.long, device=qk.device)
        for length in unique:
            same = (lengths == length).nonzero().squeeze(1)
            factors = bucket_factors(length, self.bucket_size)
            buckets[same] = hash_buckets(qk[same], factors, self.n_hashes, seed, heads, self.heads)
            counts[same.cpu()] = math.prod(factors)
        return buckets.masked_fill_(~real[:, None, None, :], -1), counts


def chunk_attention(q: Tensor, k: Tensor, v: Tensor, order: Tensor, real: Tensor | None, causal: bool,
                    bucket_size: int) -> Tensor:
    """The plain reference ChunkAttention: every round's chunks, scores and softmax, kept for autograd.

    Each round gathers the tokens in sorted order and cuts them into chunks; a chunk's queries score
    the keys of their window (the chunk looked back to, then their own), SELF_SCORE added on their
    own key, padding, a lone chunk's look-back and (causal) later keys masked.  The rounds' outputs
    then mix by their share of the union softmax, exp(lse_round - lse_all): a softmax over the rounds.
    """
    B, H, T, dh = q.shape
    R, Tp = order.shape[-2:]
    bs, n = bucket_size, Tp // bucket_size
    acc = torch.promote_types(q.dtype, torch.float32)
    real = torch.ones(B, T, dtype=torch.bool, device=q.device) if real is None else real
    real = F.pad(real, (0, Tp - T))  # the order's own padding, past T, is not real either
    q, k, v = (F.pad(t, (0, 0, 0, Tp - T)) for t in (q, k, v))
    last = last_chunk(real.sum(-1), bs)[:, None, None]  # [B, 1, 1]
    chunk = torch.arange(n, device=q.device)
    behind = lookback(chunk, last).expand(B, H, n)

    def window(t: Tensor) -> Tensor:
        """t [B, H, n, bs, ...] per chunk -> [B, H, n, 2 * bs, ...]: the looked-back chunk's rows, then its own."""
        index = behind.view(B, H, n, *[1] * (t.dim() - 3)).expand(B, H, n, *t.shape[3:])
        return torch.cat((t.gather(2, index), t), 3)

    outs, lses = [], []
    for r in range(R):
        tokens = order[:, :, r]  # [B, H, Tp]: the token in each sorted slot
        sq, sk, sv = (t.gather(2, tokens[..., None].expand(-1, -1, -1, dh)).view(B, H, n, bs, dh) for t in (q, k, v))
        queries = tokens.reshape(B, H, n, bs)
        keys = window(queries)  # [B, H, n, 2bs]
        seen = real.gather(1, keys.reshape(B, -1)).view(B, H, n, 1, 2 * bs).clone()
        seen[..., :bs] &= looks_back(chunk, last)[..., None, None]
        if causal:
            seen = seen & (keys[..., None, :] <= queries[..., None])
        scores = torch.matmul(sq * dh ** -0.5, window(sk).transpose(-1, -2)).to(acc)
        own = keys[..., None, :] == queries[..., None]
        scores = torch.where(seen, scores + SELF_SCORE * own, torch.finfo(acc).min)
        lse = scores.logsumexp(-1)
        out = torch.matmul(scores.softmax(-1).to(v.dtype), window(sv)).to(acc)
        slot = torch.empty_like(tokens).scatter_(-1, tokens, torch.arange(Tp, device=q.device).expand_as(tokens))
        outs.append(out.view(B, H, Tp, dh).gather(2, slot[..., None].expand(-1, -1, -1, dh)))
        lses.append(lse.view(B, H, Tp).gather(2, slot))
    shares = torch.stack(lses).softmax(0)  # exp(lse_round - lse_all), exact however low the lse (SELF_SCORE)
    out = sum(o * share[..., None] for o, share in zip(outs, shares))
    return out.masked_fill(~real[:, None, :, None], 0.0)[:, :, :T].to(v.dtype)


UNIT_EPS = 1e-12  # as F.normalize


def unit_length(x: Tensor, eps: float = UNIT_EPS) -> Tensor:
    """x / max(||x||, eps) along the last dim, as F.normalize, with a gradient that makes two
    temporaries of x's size where autograd through F.normalize makes about six."""
    return _UnitLength.apply(x, eps)


class _UnitLength(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, eps):
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).clamp_(min=eps)
        unit = x / norm
        ctx.save_for_backward(unit, norm)
        ctx.eps = eps
        return unit

    @staticmethod
    def backward(ctx, grad):
        unit, norm = ctx.saved_tensors
        return unit_length_grad(unit, norm, grad, ctx.eps), None


def unit_length_grad(unit: Tensor, norm: Tensor, grad: Tensor, eps: float, in_place: bool = False) -> Tensor:
    """The gradient of x / max(|x|, eps) given the unit vectors, the clamped norms and the output gradient
    (overwritten when in_place): (g - u <u, g>) / |x|, and g / eps where the norm was clamped (a constant)."""
    # einsum reduces without vecdot's product temporary (a fresh x-sized tensor: page faults at long lengths)
    along = torch.einsum("...d,...d->...", unit, grad).unsqueeze(-1).masked_fill_(norm <= eps, 0.0)
    return (grad.addcmul_ if in_place else grad.addcmul)(unit, along, value=-1).div_(norm)
