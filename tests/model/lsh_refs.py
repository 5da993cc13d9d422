"""Dense references for LSH attention, written out here from the rule's statement (not from model/): how often
each query sees each key given the buckets, and a softmax over those counts; plus small modules and masks."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from genoformer.model.lsh import LSHSelfAttention
from genoformer.model.positions import apply_rotary, rotary_angles


def projections(m: LSHSelfAttention, x: torch.Tensor, positions: torch.Tensor | None = None):
    """Rotated query, unit key and value [B, h, T, dh], straight from the module's weights."""
    B, T, d = x.shape
    heads = lambda w: (x @ w.weight.T).view(B, T, m.heads, m.dim_head).transpose(1, 2)
    cos, sin = rotary_angles(torch.arange(T) if positions is None else positions, m.dim_head)
    q = apply_rotary(heads(m.to_qk), cos, sin)
    return q, F.normalize(q, dim=-1), heads(m.to_v)


def attend(m: LSHSelfAttention, x: torch.Tensor, counts: torch.Tensor, real: torch.Tensor, positions=None):
    """Output [B, T, d] and weights [B, h, T, T] of a softmax where key j counts counts[..., i, j] times.

    A query attends to itself only when it has no other key; padding queries output zeros.
    """
    B, T, d = x.shape
    q, k, v = projections(m, x, positions)
    eye = torch.eye(T, dtype=torch.bool)
    others = (counts > 0) & ~eye
    counts = torch.where(others.any(-1, keepdim=True), counts * ~eye, (counts > 0) & eye).to(x.dtype)
    scores = (q @ k.transpose(-1, -2)) / m.dim_head ** 0.5
    scores = scores.masked_fill(counts == 0, float("-inf"))
    weights = (counts * (scores - scores.amax(-1, keepdim=True)).exp())
    weights = weights / weights.sum(-1, keepdim=True)
    weights = torch.nan_to_num(weights) * real[:, None, :, None]
    out = (weights @ v).transpose(1, 2).reshape(B, T, d)
    return m.to_out(out), weights


def full_counts(real: torch.Tensor, causal: bool) -> torch.Tensor:
    T = real.shape[1]
    allowed = real[:, None, None, :].expand(-1, 1, T, T)
    return allowed & torch.ones(T, T, dtype=torch.bool).tril() if causal else allowed


def lsh_counts(buckets: torch.Tensor, real: torch.Tensor, bucket_size: int, causal: bool) -> torch.Tensor:
    """How often each query sees each key over the rounds, from the bucket ids alone: [B, h, T, T].

    Real tokens sorted by (bucket, position) are cut into chunks of bucket_size; a chunk sees
    itself and the chunk before, the first chunk the last one (unless that is itself).
    """
    B, H, R, T = buckets.shape
    counts = torch.zeros(B, H, T, T, dtype=torch.long)
    for b in range(B):
        tokens = real[b].nonzero().squeeze(1)
        n_chunks = math.ceil(len(tokens) / bucket_size)
        for h in range(H):
            for r in range(R):
                ids = buckets[b, h, r, tokens]
                assert (ids >= 0).all()
                order = tokens[sorted(range(len(tokens)), key=lambda i: (int(ids[i]), int(tokens[i])))]
                chunks = [order[c * bucket_size:(c + 1) * bucket_size] for c in range(n_chunks)]
                for c, chunk in enumerate(chunks):
                    previous = chunks[c - 1] if c > 0 else chunks[-1]
                    keys = torch.cat((previous, chunk)) if previous is not chunk else chunk
                    for i in chunk:
                        for j in keys:
                            if not (causal and j > i):
                                counts[b, h, i, j] += 1
    return counts


def module(d=32, heads=2, bucket_size=4, n_hashes=2, causal=False, seed=0, dtype=torch.float64, kernel=None):
    """A small LSH layer in eval mode, its hash seed fixed; kernel: its ChunkAttention (default the reference)."""
    torch.manual_seed(seed)
    return LSHSelfAttention(d, heads, bucket_size=bucket_size, n_hashes=n_hashes, causal=causal,
                            hash_seed=1000 + seed, kernel=kernel).to(dtype).eval()


def padding_mask(B: int, T: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, T, generator=g) > 0.25
    mask[0] = True
    return mask


def hash_by_definition(x: torch.Tensor, factors: tuple[int, ...], n_hashes: int, seed: int):
    """Buckets [B, H, n_hashes, T] of x [B, H, T, dh] as argmax over [xR; -xR] for the rotations R drawn from `seed`
    (combined factor by factor as b1 * n2 + b2), computed in x's dtype on the CPU; and each token's margin, the
    smallest gap between the best and the second best projection over the factors (0 at a tie)."""
    generator = torch.Generator().manual_seed(seed)
    B, H, T, dh = x.shape
    buckets = torch.zeros(B, H, n_hashes, T, dtype=torch.long)
    margin = torch.full((B, H, n_hashes, T), float("inf"), dtype=x.dtype)
    for n in factors:
        rotations = torch.randn(H, dh, n_hashes * (n // 2), generator=generator).to(x.dtype)
        projected = torch.einsum("bhtd,hdr->bhtr", x, rotations).view(B, H, T, n_hashes, n // 2)
        both = torch.cat([projected, -projected], -1).transpose(2, 3)  # [B, H, R, T, n]
        buckets = buckets * n + both.argmax(-1)
        top = both.topk(2, dim=-1).values
        margin = torch.minimum(margin, top[..., 0] - top[..., 1])
    return buckets, margin
