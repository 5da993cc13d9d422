"""LSH self-attention (Reformer): tokens attend within hash buckets of similar content.

Queries and keys share one projection; keys are the L2-normalised queries.  Each of
n_hashes rounds sorts the tokens by angular-LSH bucket, cuts the order into chunks of
bucket_size, and lets each chunk attend to itself and the chunk before it.  Hashing uses the
query before rotary positions, so the same content at distant loci can share a bucket;
scores use the rotary-rotated query and key.

Buckets per round follow each sequence's real length (mask.sum), not the padded length, and
padding is sorted after every real token: appending padding, or batching a sequence with
longer ones, changes nothing at its real positions.

Rotations come from a generator seeded per call: `hash_seed` when set (deterministic
inference), otherwise one seed drawn from torch's global CPU RNG, which the reversible stack
replays so that the backward recomputation sees the same buckets.
"""
from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from .lsh_chunks import SELF_SCORE, last_chunk, lookback, looks_back
from .lsh_kernels import (KERNEL_SCOPE, LSHAttentionFunction, attention_backward, attention_forward,
                          bucket_factors, hash_buckets, padded_real, sort_order)
from .positions import Rotary, apply_rotary, resolve_rotary, rotate
from .workspace import Workspace

INSPECT_BLOCK_ELEMENTS = 2 ** 24  # cap on gathered key elements per block of inspected queries
GROUP_ROWS = 2 ** 16  # tokens x heads recomputed at once in the reversible backward (head_groups)
# query tokens of LSHSelfAttention.inspect / Reformer.inspect: slice(start, stop), range or (start, stop); None = all
Queries = slice | range | tuple[int, int] | None


@dataclass
class LSHInspection:
    """What one LSH layer did on one call.

    buckets: [B, heads, n_hashes, T] bucket id per position, round and head (-1 at padding).
    top_positions, top_weights: [B, heads, len(queries), top_k] the most attended token indices
    (0 to T-1) of each query token in `queries`, and their attention weight summed over rounds
    (-1 / 0 where fewer keys exist); row j is token queries[j].
    n_buckets: buckets per round of the longest sequence; n_buckets_per_sequence: [B].
    seed: the hash seed used.
    queries: the query tokens whose top attended keys were computed (range(T) unless narrowed).
    """

    buckets: Tensor
    top_positions: Tensor
    top_weights: Tensor
    n_buckets: int
    n_buckets_per_sequence: Tensor
    seed: int
    queries: range


class _Hashed(NamedTuple):
    q: Tensor  # [B, heads, T, dh], rotary applied
    k: Tensor  # unit-length q
    v: Tensor
    order: Tensor  # [B, heads, n_hashes, T padded to a multiple of bucket_size]
    real: Tensor  # bool [B, T]
    buckets: Tensor | None  # [B, heads, n_hashes, T], -1 at padding (None: the order was given)
    counts: Tensor | None  # buckets per round of each sequence [B]
    seed: int | None


class KeptAttention(NamedTuple):
    """One head group's attention state from a no-grad forward pass, kept for that group's attend_backward
    (which then neither hashes nor runs the kernel's forward): sort order, output and log-sum-exp."""
    order: Tensor
    out: Tensor
    lse: Tensor


class LSHSelfAttention(nn.Module):
    """x [B, T, d_model] -> [B, T, d_model]; any T and padding mask (bool [B, T], True = real).

    Dropout, when set, applies to the output projection (replayed by the reversible stack
    through the global RNG); attention weights are not dropped.
    """

    def __init__(self, d_model: int, heads: int, *, causal: bool = False, dropout: float = 0.0,
                 bucket_size: int = 64, n_hashes: int = 4, hash_seed: int | None = None):
        super().__init__()
        if d_model % heads or (d_model // heads) % 2:
            raise UsageError(f"d_model ({d_model}) must be divisible by heads ({heads}) into an even head size")
        if bucket_size < 1 or n_hashes < 1:
            raise UsageError(f"bucket_size and n_hashes must be >= 1, got {bucket_size} and {n_hashes}")
        self.heads, self.dim_head = heads, d_model // heads
        self.causal, self.dropout = causal, dropout
        self.bucket_size, self.n_hashes, self.hash_seed = bucket_size, n_hashes, hash_seed
        self.to_qk = nn.Linear(d_model, d_model, bias=False)
        self.to_v = nn.Linear(d_model, d_model, bias=False)
        self.to_out = nn.Linear(d_model, d_model)

    def forward(self, x: Tensor, mask: Tensor | None = None, positions: Tensor | None = None,
                rotary: Rotary | None = None, keep: list[KeptAttention] | None = None,
                workspace: Workspace | None = None) -> Tensor:
        """x [B, T, d_model] -> [B, T, d_model].  positions [T] (default 0 .. T - 1), or their rotary angles.

        keep: a list to receive each head group's KeptAttention (head_groups order), for a reversible
        backward that runs right after (it costs the groups' outputs: T * d_model in the accumulation
        dtype); filled only by the no-grad path, where attend_backward applies (can_attend_backward).
        workspace: where that path keeps its [T, width] intermediates (default: a Workspace of its own);
        a reversible pass gives every block's forward and backward the same one."""
        if not torch.is_grad_enabled() and self.can_attend_backward(x):
            out = self._project_by_heads(x, mask, positions, rotary, keep,
                                         Workspace(x.device) if workspace is None else workspace)
        else:
            out = self.to_out(self.attend(x, mask, positions, rotary=rotary))
        return F.dropout(out, self.dropout, training=self.training)

    @torch.no_grad()
    def _project_by_heads(self, x: Tensor, mask: Tensor | None, positions: Tensor | None,
                          rotary: Rotary | None, keep: list[KeptAttention] | None, workspace: Workspace) -> Tensor:
        """to_out(attend(x)) without autograd (inference, the reversible forward pass), a head group at a
        time as the reversible backward recomputes it: the groups' [T, width] intermediates reuse the
        workspace, and each group's share of the output projection is added into the result."""
        B, T, d = x.shape
        state = torch.get_rng_state()
        result = None
        for heads in self.head_groups(B, T) or [slice(0, self.heads)]:
            torch.set_rng_state(state)  # every group draws the hash seed one whole call draws
            h, _, out, lse, attended = self._attend_in(workspace, x, mask, positions, heads, rotary)
            if keep is not None:
                keep.append(KeptAttention(h.order, out.clone(), lse.clone()))
            attended = attended.view(B * T, -1)
            share = self.to_out.weight[:, heads.start * self.dim_head:heads.stop * self.dim_head].t()
            result = torch.addmm(self.to_out.bias, attended, share) if result is None else result.addmm_(attended, share)
        return result.view(B, T, d)

    def attend(self, x: Tensor, mask: Tensor | None = None, positions: Tensor | None = None,
               heads: slice | None = None, rotary: Rotary | None = None) -> Tensor:
        """The attention output of `heads` (default all) before the output projection: [B, T, heads * dim_head].

        Heads are independent, so attending a group at a time gives column blocks of the whole.
        Groups draw the hash seed as a whole call does: replay the RNG state before each one.
        """
        B, T, _ = x.shape
        h = self._prepare(x, mask, positions, heads, rotary)
        out = LSHAttentionFunction.apply(h.q, h.k, h.v, h.order, None if mask is None else h.real,
                                         self.causal, self.bucket_size)
        return out.transpose(1, 2).reshape(B, T, -1)

    def head_groups(self, batch: int, length: int) -> list[slice] | None:
        """Head groups for a backward pass that recomputes one group at a time (None: not possible, the
        output dropout needs every head): at long lengths the layer's intermediates are ~8 [B, T, d_model]
        tensors, a group's a fraction."""
        if self.dropout and self.training:
            return None
        per = max(1, GROUP_ROWS // max(batch * length, 1))
        return [slice(h, min(h + per, self.heads)) for h in range(0, self.heads, per)]

    def can_attend_backward(self, x: Tensor) -> bool:
        """Whether attend_backward applies to x: float32 or float64 without autocast (mixed precision
        keeps autograd, which knows autocast's casts)."""
        return x.dtype in (torch.float32, torch.float64) and not torch.is_autocast_enabled(x.device.type)

    @torch.no_grad()
    def attend_backward(self, x: Tensor, grad: Tensor, d_x: Tensor | None, workspace: Workspace, heads: slice,
                        mask: Tensor | None = None, positions: Tensor | None = None, rotary: Rotary | None = None,
                        kept: KeptAttention | None = None
                        ) -> tuple[Tensor, Tensor, list[tuple[nn.Parameter, slice, Tensor]]]:
        """attend(x, mask, positions, heads) recomputed and differentiated by hand, for a reversible backward.

        Returns the attention output [B, T, width]; the gradient of <attend(x), grad> (grad [B, T, width])
        with respect to x [B, T, d_model], added into d_x (None: a new tensor); and (parameter, rows,
        gradient of those rows) for the group's rows of the projections.  Every [T, width] intermediate
        lives in `workspace` (the output too, valid until its next use), so a backward pass that runs
        group after group maps its memory once, where autograd would page-fault in ~25 fresh tensors a
        group.  Draws the hash seed as attend does; see can_attend_backward for the dtypes.  kept: this
        group's state from the forward pass (forward's `keep`), used instead of hashing and attending again.
        """
        B, T, d = x.shape
        width = (heads.stop - heads.start) * self.dim_head
        h, real, out, lse, attended = self._attend_in(workspace, x, mask, positions, heads, rotary, kept)
        grad = grad.view(B, T, -1, self.dim_head).transpose(1, 2)
        d_q, d_k, d_v = attention_backward(h.q, h.k, h.v, h.order, real, self.causal, self.bucket_size, out, lse,
                                           grad, workspace)
        norm = torch.linalg.vector_norm(h.q, dim=-1, keepdim=True).clamp_(min=UNIT_EPS)
        d_q.add_(_unit_length_grad(h.k, norm, d_k, UNIT_EPS, in_place=True))
        # q's gradient, rotated back, goes into its projection's spent buffer, v's into v's when not contiguous
        flat_x = x.reshape(B * T, d)
        d_qk = workspace.get("proj_qk", (B * T, width), x.dtype)
        rotate(d_q, *resolve_rotary(positions, rotary, T, self.dim_head, x.device), inverse=True,
               out=d_qk.view(B, T, -1, self.dim_head).transpose(1, 2))
        d_v = workspace.rows(d_v.transpose(1, 2), "proj_v").view(B * T, width)
        rows = slice(heads.start * self.dim_head, heads.stop * self.dim_head)
        if d_x is None:  # the first group: d_x is made where the kernel's scratch was (the peak stays where it was)
            workspace.release(KERNEL_SCOPE + "scratch_")
        param_grads = []
        for d_projection, linear in ((d_qk, self.to_qk), (d_v, self.to_v)):
            weight = linear.weight.detach()[rows]
            d_x = torch.mm(d_projection, weight) if d_x is None else d_x.view(B * T, d).addmm_(d_projection, weight)
            param_grads.append((linear.weight, rows, torch.mm(d_projection.t(), flat_x)))
        return attended, d_x.view(B, T, d), param_grads

    def _attend_in(self, workspace: Workspace, x: Tensor, mask: Tensor | None, positions: Tensor | None,
                   heads: slice, rotary: Rotary | None, kept: KeptAttention | None = None
                   ) -> tuple[_Hashed, Tensor | None, Tensor, Tensor, Tensor]:
        """attend without autograd, every [T, width] tensor in workspace: the prepared projections, the
        kernel's padding mask, its output [B, h, Tp, dh] and log-sum-exp (kept's, when given), and the
        output as [B, T, width]."""
        B, T, _ = x.shape
        h = self._prepare(x, mask, positions, heads, rotary, workspace, None if kept is None else kept.order)
        real = padded_real(None if mask is None else h.real, T, h.order.shape[-1])
        if kept is None:
            out, lse = attention_forward(h.q, h.k, h.v, h.order, real, self.causal, self.bucket_size, workspace)
        else:
            out, lse = kept.out, kept.lse
        attended = workspace.rows(out[:, :, :T].transpose(1, 2), "attended").view(B, T, -1)
        return h, real, out, lse, attended

    @torch.no_grad()
    def inspect(self, x: Tensor, mask: Tensor | None = None, positions: Tensor | None = None,
                top_k: int = 8, queries: Queries = None, rotary: Rotary | None = None) -> LSHInspection:
        """Buckets of every token and top attended positions of the query tokens (seed drawn as forward does).

        queries: the tokens whose top attended keys to compute, as slice(start, stop), (start, stop) or
        range(start, stop) with 0 <= start <= stop <= T; None: all T. Buckets always cover every token
        and keys come from the whole input, so a ranged result equals that slice of the full one; only
        the top-key search, the costly part, shrinks with the range.
        """
        if top_k < 1:
            raise UsageError(f"top_k must be >= 1, got {top_k}")
        wanted = query_range(queries, x.shape[1])
        h = self._prepare(x, mask, positions, rotary=rotary)
        B, H, T, dh = h.q.shape
        precise = torch.promote_types(h.q.dtype, torch.float32)
        q, k = h.q.flatten(0, 1).to(precise), h.k.flatten(0, 1).to(precise)
        order, real = h.order.flatten(0, 1), h.real.repeat_interleave(H, 0)
        slot = torch.empty_like(order).scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
        block = max(1, INSPECT_BLOCK_ELEMENTS // (B * H * self.n_hashes * 2 * self.bucket_size * dh))
        found = [_top_attended(q, k, order, slot, real, self.causal, self.bucket_size, start,
                               min(start + block, wanted.stop), top_k)
                 for start in range(wanted.start, wanted.stop, block)]
        if found:
            top_positions, top_weights = (torch.cat(parts, 1) for parts in zip(*found))
        else:  # an empty range: no query rows
            top_positions = torch.empty(B * H, 0, 0, dtype=torch.long, device=x.device)
            top_weights = torch.empty(B * H, 0, 0, device=x.device)
        missing = top_k - top_positions.shape[-1]
        top_positions, top_weights = F.pad(top_positions, (0, missing), value=-1), F.pad(top_weights, (0, missing))
        return LSHInspection(buckets=h.buckets, top_positions=top_positions.unflatten(0, (B, H)),
                             top_weights=top_weights.unflatten(0, (B, H)), n_buckets=int(h.counts.max()),
                             n_buckets_per_sequence=h.counts, seed=h.seed, queries=wanted)

    def _prepare(self, x: Tensor, mask: Tensor | None, positions: Tensor | None, heads: slice | None = None,
                 rotary: Rotary | None = None, workspace: Workspace | None = None, order: Tensor | None = None
                 ) -> _Hashed:
        """Seed, projections, hashing and sort order (of `heads`, default all), shared by forward, inspect and
        attend_backward (which gives a workspace for the projections, q and k: no autograd then).  A given
        order (kept from the forward pass) skips the seed and the hashing."""
        B, T, _ = x.shape
        real = torch.ones(B, T, dtype=torch.bool, device=x.device) if mask is None else mask.to(x.device, torch.bool)
        if real.shape != (B, T):
            raise UsageError(f"mask must have shape [{B}, {T}], got {list(real.shape)}")
        cos, sin = resolve_rotary(positions, rotary, T, self.dim_head, x.device)
        heads = slice(0, self.heads) if heads is None else heads
        rows = slice(heads.start * self.dim_head, heads.stop * self.dim_head)
        split = lambda t: t.view(B, T, heads.stop - heads.start, self.dim_head).transpose(1, 2)
        # the shared query/key in float32 even under autocast, so buckets do not depend on precision
        precise = torch.promote_types(x.dtype, torch.float32)
        if x.dtype == precise and not torch.is_autocast_enabled(x.device.type):
            width = rows.stop - rows.start
            if workspace is None:  # both in one matmul, and so one matmul for their input gradient in backward
                both = F.linear(x, torch.cat((self.to_qk.weight[rows], self.to_v.weight[rows])))
                qk, v = map(split, both.split(width, dim=-1))  # split's gradient is one cat, not two zero-padded copies
            else:  # a buffer each, so that one head's v is contiguous (the kernel copies strided rows)
                qk, v = (split(torch.mm(x.reshape(B * T, -1), linear.weight.detach()[rows].t(),
                                        out=workspace.get(name, (B * T, width), x.dtype)).view(B, T, -1))
                         for name, linear in (("proj_qk", self.to_qk), ("proj_v", self.to_v)))
        else:
            with torch.autocast(x.device.type, enabled=False):
                qk = split(F.linear(x.to(precise), self.to_qk.weight[rows].to(precise)))
            v = split(F.linear(x, self.to_v.weight[rows]))
        buckets = counts = seed = None
        if order is None:
            seed = self.hash_seed if self.hash_seed is not None else int(torch.randint(0, 2 ** 62, (1,)).item())
            buckets, counts = self._hash(qk, real, seed, heads)
            order = sort_order(buckets, real, math.ceil(max(T, 1) / self.bucket_size) * self.bucket_size)
        if workspace is None:
            q = apply_rotary(qk.to(v.dtype), cos, sin)
            k = unit_length(q.to(precise)).to(q.dtype)  # rotary keeps norms: unit key = rotated unit query
        else:
            q = rotate(qk, cos, sin, out=workspace.get("rotated_q", qk.shape, qk.dtype))
            norm = torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_(min=UNIT_EPS)
            k = torch.div(q, norm, out=workspace.get("unit_k", q.shape, q.dtype))
        return _Hashed(q, k, v, order, real, buckets, counts, seed)

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
        return _unit_length_grad(unit, norm, grad, ctx.eps), None


def _unit_length_grad(unit: Tensor, norm: Tensor, grad: Tensor, eps: float, in_place: bool = False) -> Tensor:
    """The gradient of x / max(|x|, eps) given the unit vectors, the clamped norms and the output gradient
    (overwritten when in_place): (g - u <u, g>) / |x|, and g / eps where the norm was clamped (a constant)."""
    # einsum reduces without vecdot's product temporary (a fresh x-sized tensor: page faults at long lengths)
    along = torch.einsum("...d,...d->...", unit, grad).unsqueeze(-1).masked_fill_(norm <= eps, 0.0)
    return (grad.addcmul_ if in_place else grad.addcmul)(unit, along, value=-1).div_(norm)


def query_range(queries: Queries, length: int) -> range:
    """The query tokens named by `queries` (see LSHSelfAttention.inspect) of `length`; UsageError if out of bounds."""
    if queries is None:
        return range(length)
    if isinstance(queries, (slice, range)):
        if queries.step not in (None, 1):
            raise UsageError(f"queries must be a contiguous range of tokens (step 1), got step {queries.step}")
        start, stop = queries.start, queries.stop
        start, stop = 0 if start is None else start, length if stop is None else stop
    else:
        try:
            start, stop = queries
        except (TypeError, ValueError):
            raise UsageError(f"queries must be a slice, range or (start, stop) pair, got {queries!r}") from None
    try:
        if isinstance(start, bool) or isinstance(stop, bool):
            raise TypeError
        start, stop = operator.index(start), operator.index(stop)  # ints, numpy and 0-d tensor integers
    except TypeError:
        raise UsageError(f"queries start and stop must be integers, got {start!r} and {stop!r}") from None
    if not 0 <= start <= stop <= length:
        raise UsageError(f"queries [{start}, {stop}) must satisfy 0 <= start <= stop <= {length} (the tokens)")
    return range(start, stop)


def _top_attended(q: Tensor, k: Tensor, order: Tensor, slot: Tensor, real: Tensor, causal: bool, bucket_size: int,
                  start: int, stop: int, top_k: int) -> tuple[Tensor, Tensor]:
    """Top attended keys of queries [start, stop), recomputed straight from the sort order.

    q, k [N, T, dh]; order [N, R, Tp] (slot -> token) and slot (token -> slot); real [N, T].  Each query's
    keys are, in every round, those lsh_chunks says it sees, all softmaxed together (scored as the kernel
    scores them).  Returns positions and weights [N, stop - start, <= top_k].
    """
    N, T, dh = q.shape
    bs, device = bucket_size, q.device
    queries = torch.arange(start, stop, device=device)
    chunk = slot[:, :, start:stop] // bs  # [N, R, n]
    last = last_chunk(real.sum(-1), bs)[:, None, None]
    offsets = torch.arange(bs, device=device)
    window = torch.cat(((lookback(chunk, last) * bs)[..., None] + offsets, (chunk * bs)[..., None] + offsets), -1)
    keys = order.gather(-1, window.flatten(-2)).view_as(window)  # [N, R, n, 2bs]
    allowed = torch.ones_like(keys, dtype=torch.bool)
    allowed[..., :bs] &= looks_back(chunk, last)[..., None]
    keys, allowed = keys.transpose(1, 2).flatten(-2), allowed.transpose(1, 2).flatten(-2)  # [N, n, R * 2bs]
    allowed &= keys < T
    keys = keys.clamp(max=T - 1)
    allowed &= real.gather(1, keys.flatten(1)).view_as(keys)
    if causal:
        allowed &= keys <= queries[:, None]
    key_vectors = k.gather(1, keys.flatten(1)[..., None].expand(-1, -1, dh)).view(*keys.shape, dh)
    scores = torch.einsum("nqd,nqkd->nqk", q[:, start:stop] * dh ** -0.5, key_vectors).double()
    scores = torch.where(keys == queries[:, None], scores + SELF_SCORE, scores)
    scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
    weights = scores.softmax(-1) * real[:, start:stop, None]
    # a key seen in several rounds counts once with its weights summed: sort by key, sum runs
    keys, by_key = keys.masked_fill(~allowed, -1).sort(-1)
    weights = weights.gather(-1, by_key)
    running = weights.cumsum(-1)
    last_of_run = F.pad(keys[..., 1:] != keys[..., :-1], (0, 1), value=True)
    before_run = F.pad(running.masked_fill(~last_of_run, 0.0)[..., :-1], (1, 0)).cummax(-1).values
    totals = (running - before_run).masked_fill(~last_of_run | (keys < 0), -1.0)
    top, pick = totals.topk(min(top_k, totals.shape[-1]), dim=-1)
    chosen = top > 0
    return keys.gather(-1, pick).masked_fill(~chosen, -1), top.clamp(min=0).float()
