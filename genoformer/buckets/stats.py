"""Summary statistics of a BucketMap, one row per layer / head / round (summary.tsv; see docs/buckets.md).

"Attended pairs" are the (query, key) token pairs LSH attention scores in a round: the round sorts
tokens by (bucket, position), cuts the order into chunks of bucket_size, and each query sees its
own chunk and the one before (the first chunk: the last one), itself excluded, as in
genoformer.model.lsh. Queries are the tokens owning region bases; keys lie anywhere in the window.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from genoformer.buckets.map import BucketMap

DISTANCES = {"1kb": 1_000, "10kb": 10_000, "100kb": 100_000}

COLUMNS = ("layer", "head", "round", "n_buckets", "tokens", "bucket_size_min", "bucket_size_median",
           "bucket_size_max", "empty_buckets", "region_tokens", "attended_pairs", "distance_median",
           *(f"share_gt_{name}" for name in DISTANCES), "met_in_other_rounds")


def chunks(buckets: np.ndarray, bucket_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(order, chunk): tokens sorted by (bucket, position), and each token's chunk in that order."""
    order = np.argsort(buckets, kind="stable")
    slot = np.empty(len(buckets), dtype=np.int64)
    slot[order] = np.arange(len(buckets))
    return order, slot // bucket_size


def _previous(chunk: np.ndarray, n_tokens: int, bucket_size: int) -> np.ndarray:
    """The chunk each chunk looks back to: the one before, and for the first one the last."""
    return np.where(chunk == 0, -(-n_tokens // bucket_size) - 1, chunk - 1)


def attended_pairs(buckets: np.ndarray, bucket_size: int, queries: np.ndarray,
                   causal: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(query, key) int64 arrays: the pairs one round of LSH attention scores, for the given query tokens."""
    T, bs = len(buckets), bucket_size
    order, chunk = chunks(buckets, bs)
    own = chunk[queries]
    previous = _previous(own, T, bs)
    offsets = np.arange(bs)
    slots = np.concatenate([previous[:, None] * bs + offsets, own[:, None] * bs + offsets], axis=1)
    allowed = slots < T
    allowed[:, :bs] &= (previous != own)[:, None]  # a lone chunk does not look back at itself
    keys = order[np.minimum(slots, T - 1)]
    allowed &= keys != queries[:, None]
    if causal:
        allowed &= keys <= queries[:, None]
    return np.broadcast_to(queries[:, None], keys.shape)[allowed], keys[allowed]


def meet(chunk: np.ndarray, bucket_size: int, query: np.ndarray, key: np.ndarray) -> np.ndarray:
    """bool per pair: does `key` fall in the query's own or look-back chunk in the round of `chunk`?"""
    own = chunk[query]
    previous = _previous(own, len(chunk), bucket_size)
    return (chunk[key] == own) | ((chunk[key] == previous) & (previous != own))


def sharing_enrichment(buckets: np.ndarray, inside: np.ndarray, outside: np.ndarray) -> float:
    """P(two bases in a feature share a bucket) / P(a feature base and a non-feature base share one).

    inside, outside [T]: each token's owned region bases in / out of the feature. Base pairs within
    one token (which share a bucket trivially) are left out; NaN where either kind of pair is absent.
    """
    n = int(buckets.max()) + 1 if len(buckets) else 1
    per_in = np.bincount(buckets, weights=inside, minlength=n)
    per_out = np.bincount(buckets, weights=outside, minlength=n)
    same_token_ii, same_token_io = float(inside @ inside), float(inside @ outside)
    total_ii = float(inside.sum()) ** 2 - same_token_ii
    total_io = float(inside.sum()) * float(outside.sum()) - same_token_io
    if total_ii <= 0 or total_io <= 0:
        return float("nan")
    shared_ii = float(per_in @ per_in) - same_token_ii
    shared_io = float(per_in @ per_out) - same_token_io
    if shared_io == 0:
        return float("inf") if shared_ii > 0 else float("nan")
    return (shared_ii / total_ii) / (shared_io / total_io)


def _owned_counts(bmap: BucketMap, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per token: owned region bases where `mask` (bool over the region's bases) is True, and False."""
    rs = bmap.region.start
    s = np.clip(bmap.owned_start - rs, 0, len(bmap.region))
    e = np.clip(bmap.owned_end - rs, 0, len(bmap.region))
    cum = np.r_[0, np.cumsum(mask, dtype=np.int64)]
    inside = (cum[e] - cum[s]).astype(np.float64)
    return inside, (e - s) - inside


def summarize(bmap: BucketMap, tracks: Mapping[str, np.ndarray] | None = None) -> list[dict]:
    """Rows of COLUMNS plus one `enrichment_<track>` per track (bool masks over the region's bases)."""
    tracks = dict(tracks or {})
    counts = {name: _owned_counts(bmap, mask) for name, mask in tracks.items()}
    queries = np.flatnonzero(bmap.region_tokens())
    T = bmap.n_tokens
    rows = []
    for li, layer in enumerate(bmap.layers):
        for hi, head in enumerate(bmap.heads):
            pairs = [attended_pairs(bmap.buckets[li, hi, ri], bmap.bucket_size, queries, bmap.causal)
                     for ri in range(len(bmap.rounds))]
            chunk = [chunks(bmap.buckets[li, hi, ri], bmap.bucket_size)[1] for ri in range(len(bmap.rounds))]
            for ri, round_ in enumerate(bmap.rounds):
                ids = bmap.buckets[li, hi, ri]
                sizes = np.bincount(ids, minlength=bmap.n_buckets)
                occupied = sizes[sizes > 0]
                q, k = pairs[ri]
                distance = np.abs(bmap.token_start[k] - bmap.token_start[q])
                again = np.zeros(len(q), dtype=bool)
                for other in (c for j, c in enumerate(chunk) if j != ri):
                    again |= meet(other, bmap.bucket_size, q, k)
                row = {"layer": layer, "head": head, "round": round_, "n_buckets": bmap.n_buckets, "tokens": T,
                       "bucket_size_min": int(occupied.min()), "bucket_size_median": float(np.median(occupied)),
                       "bucket_size_max": int(occupied.max()), "empty_buckets": int((sizes == 0).sum()),
                       "region_tokens": len(queries), "attended_pairs": len(q),
                       "distance_median": float(np.median(distance)) if len(q) else float("nan")}
                for name, cutoff in DISTANCES.items():
                    row[f"share_gt_{name}"] = float((distance > cutoff).mean()) if len(q) else float("nan")
                row["met_in_other_rounds"] = float(again.mean()) if len(chunk) > 1 and len(q) else float("nan")
                for name, (inside, outside) in counts.items():
                    row[f"enrichment_{name}"] = sharing_enrichment(ids, inside, outside)
                rows.append(row)
    return rows
