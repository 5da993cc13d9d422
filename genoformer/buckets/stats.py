"""Summary statistics of a BucketMap, one row per layer / head / round (summary.tsv; see docs/buckets.md).

"Attended pairs" are the (query, key) token pairs LSH attention weighs in a round: the round sorts
tokens by (bucket, position), cuts the order into chunks of bucket_size, and each query sees its
own chunk and the one before, by the rule of genoformer.model.lsh_chunks (a token's own key only
when it sees nothing else). Queries are the tokens owning region bases; keys lie anywhere in the window.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from genoformer.buckets.map import BucketMap
from genoformer.model.lsh_chunks import attended, in_window, last_chunk, lookback, looks_back

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


def attended_pairs(rounds: np.ndarray, bucket_size: int, queries: np.ndarray,
                   causal: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per round, (query, key) int64 arrays: the pairs LSH attention weighs in that round, for the given query
    tokens.  rounds [R, T]: each round's bucket ids of the T real tokens.  A query's own key is a pair only
    when the query sees no other key in any of these rounds (lsh_chunks.attended)."""
    R, T = rounds.shape
    bs, last = bucket_size, last_chunk(T, bucket_size)
    offsets = np.arange(bs)
    keys, seen = [], []
    for buckets in rounds:
        order, chunk = chunks(buckets, bs)
        own = chunk[queries]
        slots = np.concatenate([lookback(own, last)[:, None] * bs + offsets, own[:, None] * bs + offsets], axis=1)
        visible = slots < T
        visible[:, :bs] &= looks_back(own, last)[:, None]
        key = order[np.minimum(slots, T - 1)]
        if causal:
            visible &= key <= queries[:, None]
        keys.append(key)
        seen.append(visible)
    keys, seen = np.concatenate(keys, axis=1), np.concatenate(seen, axis=1)
    weighed = attended(seen, keys == queries[:, None])
    query = np.broadcast_to(queries[:, None], (len(queries), 2 * bs))
    return [(query[w], k[w]) for k, w in zip(np.split(keys, R, axis=1), np.split(weighed, R, axis=1))]


def meet(chunk: np.ndarray, bucket_size: int, query: np.ndarray, key: np.ndarray) -> np.ndarray:
    """bool per pair: does `key` fall in the query's window in the round of `chunk`?"""
    return in_window(chunk[query], chunk[key], last_chunk(len(chunk), bucket_size))


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
            pairs = attended_pairs(bmap.buckets[li, hi], bmap.bucket_size, queries, bmap.causal)
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
