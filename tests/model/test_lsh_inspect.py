"""Buckets and top attended keys of an LSH layer (lsh_inspect) against dense weights from the buckets."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from lsh_refs import attend, lsh_counts, module, padding_mask, projections

from genoformer.errors import UsageError
from genoformer.model import lsh_inspect
from genoformer.model.lsh_inspect import inspect


def test_inspect_matches_dense_weights():
    T = 30
    m = module(bucket_size=4, n_hashes=3)
    x = torch.randn(2, T, 32, dtype=torch.float64)
    real = padding_mask(2, T, seed=5)
    with torch.no_grad():
        found = inspect(m, x, mask=real, top_k=4)
        _, weights = attend(m, x, lsh_counts(found.buckets, real, 4, False), real)
        everything = inspect(m, x, mask=real, top_k=T)
        out = m(x, mask=real)
    assert found.buckets.shape == (2, 2, 3, T) and found.top_positions.shape == (2, 2, T, 4)
    assert ((found.buckets >= 0) & (found.buckets < found.n_buckets)).all(dim=(1, 2))[real].all()
    assert (found.buckets[~real[:, None, None, :].expand_as(found.buckets)] == -1).all()
    assert found.n_buckets_per_sequence.tolist() == [8, 6]  # ceil(real length / 4), even
    assert found.seed == m.hash_seed
    top = weights.topk(4, dim=-1)
    assert torch.allclose(found.top_weights.double(), top.values, atol=1e-6)
    distinct = (top.values[..., :-1] - top.values[..., 1:]).abs().min(-1).values > 1e-6
    assert (found.top_positions == top.indices)[distinct & (top.values[..., -1] > 1e-6)].all()
    sums = found.top_weights.sum(-1)
    assert (sums <= 1 + 1e-6).all() and (sums[~real[:, None].expand_as(sums)] == 0).all()
    # with every key listed, the weights rebuild the forward output
    _, _, v = projections(m, x)
    picked = v[:, :, None].expand(-1, -1, T, -1, -1).gather(
        3, everything.top_positions.clamp(min=0)[..., None].expand(-1, -1, -1, -1, m.dim_head))
    rebuilt = (everything.top_weights.double()[..., None] * picked).sum(-2)
    rebuilt = m.to_out(rebuilt.transpose(1, 2).reshape(2, T, 32))
    assert torch.allclose(rebuilt[real], out[real], atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_inspect_for_a_range_of_queries_equals_that_slice_of_the_full_result(monkeypatch, causal):
    T = 45
    m = module(bucket_size=4, n_hashes=3, causal=causal)
    x = torch.randn(2, T, 32, dtype=torch.float64)
    real = padding_mask(2, T, seed=3)
    full = inspect(m, x, mask=real, top_k=6)
    assert full.queries == range(T) and full.top_positions.shape == (2, 2, T, 6)
    # 7 queries per block (B * heads * rounds * 2 * bucket_size * dh elements each): ranges cross block edges
    monkeypatch.setattr(lsh_inspect, "INSPECT_BLOCK_ELEMENTS", 7 * 2 * 2 * 3 * 2 * 4 * 16)
    for queries, rows in [(slice(10, 29), range(10, 29)), ((0, T), range(T)), (range(44, 45), range(44, 45)),
                          (slice(None, 5), range(5)), (slice(30, None), range(30, T)),
                          ((np.int64(3), torch.tensor(4)), range(3, 4)), ((20, 20), range(20, 20))]:
        part = inspect(m, x, mask=real, top_k=6, queries=queries)
        assert part.queries == rows and part.top_positions.shape == (2, 2, len(rows), 6)
        assert torch.equal(part.buckets, full.buckets) and part.n_buckets == full.n_buckets
        assert torch.equal(part.top_positions, full.top_positions[:, :, rows.start:rows.stop])
        assert torch.equal(part.top_weights, full.top_weights[:, :, rows.start:rows.stop])
    for bad in [(5, 3), (0, T + 1), (-1, 4), slice(0, 10, 2), (1.5, 3), (True, 3), "0-10", (1, 2, 3)]:
        with pytest.raises(UsageError, match="queries"):
            inspect(m, x, mask=real, queries=bad)


def test_top_k_must_be_positive():
    with pytest.raises(UsageError, match="top_k"):
        inspect(module(), torch.randn(2, 10, 32, dtype=torch.float64), top_k=0)
