"""What an LSH layer did on one input: every token's buckets and each query's most attended keys.

For `genoformer buckets` and Reformer.inspect.  The top keys are recomputed from the layer's sort
order (by lsh_chunks' rule, scored as the kernel scores them), a block of queries at a time, so
their cost scales with the queries asked for, not with the input length.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UsageError
from .lsh import LSHSelfAttention
from .lsh_chunks import SELF_SCORE, last_chunk, lookback, looks_back
from .positions import Rotary

INSPECT_BLOCK_ELEMENTS = 2 ** 24  # cap on gathered key elements per block of inspected queries
# query tokens of inspect / Reformer.inspect: slice(start, stop), range or (start, stop); None = all
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


@torch.no_grad()
def inspect(attention: LSHSelfAttention, x: Tensor, mask: Tensor | None = None, positions: Tensor | None = None,
            top_k: int = 8, queries: Queries = None, rotary: Rotary | None = None) -> LSHInspection:
    """Buckets of every token and top attended positions of the query tokens of `attention` on its input x
    [B, T, d_model] (the hash seed drawn as its forward pass draws it).

    queries: the tokens whose top attended keys to compute, as slice(start, stop), (start, stop) or
    range(start, stop) with 0 <= start <= stop <= T; None: all T. Buckets always cover every token
    and keys come from the whole input, so a ranged result equals that slice of the full one; only
    the top-key search, the costly part, shrinks with the range.
    """
    if top_k < 1:
        raise UsageError(f"top_k must be >= 1, got {top_k}")
    wanted = query_range(queries, x.shape[1])
    h = attention.hashed(x, mask, positions, rotary=rotary)
    B, H, T, dh = h.q.shape
    bs = attention.bucket_size
    precise = torch.promote_types(h.q.dtype, torch.float32)
    q, k = h.q.flatten(0, 1).to(precise), h.k.flatten(0, 1).to(precise)
    order, real = h.order.flatten(0, 1), h.real.repeat_interleave(H, 0)
    slot = torch.empty_like(order).scatter_(-1, order, torch.arange(order.shape[-1], device=order.device).expand_as(order))
    block = max(1, INSPECT_BLOCK_ELEMENTS // (B * H * attention.n_hashes * 2 * bs * dh))
    found = [_top_attended(q, k, order, slot, real, attention.causal, bs, start, min(start + block, wanted.stop), top_k)
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


def query_range(queries: Queries, length: int) -> range:
    """The query tokens named by `queries` (see inspect) of `length`; UsageError if out of bounds."""
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
