"""Angular LSH: bucket ids by random rotations, and the sort order they give each round.

Angular LSH (Andoni et al. 2015, as the Reformer uses it): a vector's bucket is the argmax of
[xR; -xR] for a random rotation R, so vectors at a small angle tend to share a bucket.  Past
FACTORISE_ABOVE buckets, two such hashes of ~sqrt(n) buckets each are combined, which keeps
hashing O(T * sqrt(n) * d).  Rotations come from a CPU generator seeded per call, so buckets do
not depend on device, batch or length.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .sizing import small_pieces

FACTORISE_ABOVE = 128  # more buckets than this: hash with two rotations of ~sqrt(n) buckets each


def bucket_factors(length: int, bucket_size: int) -> tuple[int, ...]:
    """Buckets per round for a sequence of `length` real tokens, as one or two even factors.

    About one bucket per bucket_size tokens, even so angular hashing can use [xR; -xR].
    Past FACTORISE_ABOVE the count is rounded up to n1 * n2 with n1, n2 even and ~sqrt(n),
    so hashing costs O(T * sqrt(n) * d) rather than O(T * n * d), which would be O(T^2).
    """
    n = max(2, -(-length // bucket_size))
    n += n % 2
    if n <= FACTORISE_ABOVE:
        return (n,)
    n1 = 2 * math.ceil(math.sqrt(n) / 2)
    return (n1, 2 * math.ceil(n / n1 / 2))


def hash_buckets(x: Tensor, factors: tuple[int, ...], n_hashes: int, seed: int,
                 heads: slice | None = None, n_heads: int | None = None) -> Tensor:
    """Bucket ids in [0, prod(factors)) of x [B, H, T, dh] for each round: LongTensor [B, H, n_hashes, T].

    Angular LSH: bucket = argmax over [xR; -xR] for a random rotation R (one per head and
    round).  Factorised hashing combines two such hashes as b1 * n2 + b2.  Rotations come from
    a CPU generator seeded with `seed`, so they do not depend on device, batch or length, and
    the projection runs in float32 whatever the autocast state.  When x holds only `heads` of a
    layer's `n_heads`, those heads get the rotations they get when hashed with all the others.
    """
    B, H, T, dh = x.shape
    heads = slice(0, H) if heads is None else heads
    generator = torch.Generator().manual_seed(seed)
    with torch.autocast(x.device.type, enabled=False):
        x = x.detach().float()  # buckets are discrete: nothing to differentiate
        buckets = torch.zeros(B, H, n_hashes, T, dtype=torch.long, device=x.device)
        for n in factors:
            rotations = torch.randn(n_heads or H, dh, n_hashes, n // 2, generator=generator)[heads].to(x.device)
            if not small_pieces(x.device):  # one batched product: [B, H, R, n / 2, T]
                projected = torch.matmul(rotations.flatten(2).transpose(-1, -2), x.transpose(-1, -2))
                buckets.mul_(n).add_(_angular_argmax(projected.view(B, H, n_hashes, n // 2, T)))
                continue
            # small pieces (sizing.py): one (sequence, head, round) at a time, [n / 2, T] projections of a few
            # MB reused from the heap, positions last so the reductions run along contiguous memory; on a
            # GPU the one batched product above is one kernel launch instead of thousands
            projected = torch.empty(n // 2, T, device=x.device)
            for b in range(B):
                for h in range(H):
                    for r in range(n_hashes):
                        torch.mm(rotations[h, :, r].t(), x[b, h].t(), out=projected)
                        buckets[b, h, r].mul_(n).add_(_angular_argmax(projected))
    return buckets


def _angular_argmax(projected: Tensor) -> Tensor:
    """argmax over [p; -p] along dim -2 of projected [..., h, T] (the first on ties, as torch.argmax): [..., T].

    Built from amax/amin along dim -2 and an equality test, which run along contiguous positions;
    argmax along dim -2 (or along a contiguous last dim of h) is several times slower on CPU."""
    h = projected.shape[-2]
    high, low = projected.amax(-2), projected.amin(-2)
    negative = high < -low  # [p; -p]: the positive half comes first, so it wins a tie
    best = torch.where(negative, low, high).unsqueeze(-2)
    # the first column holding best: the largest (h - column) where equal
    index = torch.uint8 if h < 256 else torch.int32  # bytes where they suffice: a quarter of the traffic
    reversed_columns = torch.arange(h, 0, -1, dtype=index, device=projected.device)[:, None]
    first = projected.eq(best).to(index).mul_(reversed_columns).amax(-2)
    return (h - first.long()).add_(negative.long() * h)


def sort_order(buckets: Tensor, real: Tensor, padded_length: int) -> Tensor:
    """Per round, token indices sorted by (bucket, position), padding last: LongTensor [..., n_hashes, padded_length].

    buckets [B, H, R, T]; real bool [B, T].  Padding (masked or beyond T) goes to a sentinel
    bucket after every real one, so real tokens fill the first chunks of each round however
    much padding follows.
    """
    B, H, R, T = buckets.shape
    padding = 2 ** 62  # above any bucket id, and exact as the float F.pad takes
    keys = F.pad(buckets.masked_fill(~real[:, None, None, :], padding), (0, padded_length - T), value=padding)
    return keys.argsort(dim=-1, stable=True)
