"""The bucket statistics count exactly the (query, key) pairs LSH attention weighs: the kernel is the truth."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from genoformer.buckets.stats import attended_pairs, chunks, meet
from genoformer.model.fast import lsh_kernels
from genoformer.model.fast.lsh_kernels import attention_forward, padded_real
from genoformer.model.fast.workspace import Workspace
from genoformer.model.lsh_hashing import sort_order


def kernel_pairs(buckets: torch.Tensor, bucket_size: int, causal: bool, seed: int) -> list[set]:
    """Per round, the (query, key) pairs whose attention weight the kernel makes non-zero.

    Values are one-hot (v = identity), so a query's output row is its weights over the keys.  A round's
    share of the union softmax is its own softmax scaled by exp(lse_round - lse_all), each log-sum-exp
    from the kernel run over that round alone and over all of them."""
    R, T = buckets.shape
    Tp = math.ceil(T / bucket_size) * bucket_size
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(1, 1, T, T, generator=g, dtype=torch.float64)
    k = torch.nn.functional.normalize(torch.randn(1, 1, T, T, generator=g, dtype=torch.float64), dim=-1)
    v = torch.eye(T, dtype=torch.float64)[None, None]
    real = padded_real(torch.ones(1, T, dtype=torch.bool), T, Tp)
    order = sort_order(buckets[None, None], torch.ones(1, T, dtype=torch.bool), Tp)

    def run(rounds: slice):
        out, lse = attention_forward(q, k, v, order[:, :, rounds], real, causal, bucket_size,
                                     Workspace(q.device), fresh=True)
        return out[0, 0, :T], lse[0, 0, :T]

    weights, lse = run(slice(None))
    shares = []
    for r in range(R):
        out, round_lse = run(slice(r, r + 1))
        shares.append(out * (round_lse - lse).exp()[:, None])
    assert torch.allclose(sum(shares), weights, atol=1e-12)  # the rounds' shares make up the whole
    return [set(map(tuple, (share > 0).nonzero().tolist())) for share in shares]


@pytest.mark.parametrize("fused", [True, False], ids=["fused-cpu", "plain"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T, bucket_size", [(37, 4), (24, 4), (6, 8), (1, 4)],
                         ids=["partial-last-chunk", "whole-chunks", "lone-chunk", "lone-token"])
def test_attended_pairs_are_the_pairs_the_kernel_weighs(monkeypatch, fused, causal, T, bucket_size):
    monkeypatch.setattr(lsh_kernels, "USE_FUSED_CPU", fused)
    g = torch.Generator().manual_seed(T)
    buckets = torch.randint(0, 3, (3, T), generator=g)
    expected = kernel_pairs(buckets, bucket_size, causal, seed=T)
    found = attended_pairs(buckets.numpy(), bucket_size, np.arange(T), causal)
    assert [set(zip(q.tolist(), k.tolist())) for q, k in found] == expected
    alone = {q for q, k in expected[0] if q == k}  # only tokens that see nothing else attend to themselves
    assert (alone == {0}) if causal or T == 1 else not alone
    # a subset of the queries gives those queries' pairs
    some = np.arange(0, T, 3)
    part = attended_pairs(buckets.numpy(), bucket_size, some, causal)
    assert [set(zip(q.tolist(), k.tolist())) for q, k in part] == [{p for p in e if p[0] in set(some.tolist())}
                                                                  for e in expected]


def test_meet_is_membership_in_another_rounds_pairs():
    g = torch.Generator().manual_seed(0)
    rounds = torch.randint(0, 4, (2, 41), generator=g).numpy()
    pairs = attended_pairs(rounds, 4, np.arange(41))
    (q, k), other = pairs[0], {tuple(p) for p in zip(*map(np.ndarray.tolist, pairs[1]))}
    met = meet(chunks(rounds[1], 4)[1], 4, q, k)
    assert met.tolist() == [(a, b) in other for a, b in zip(q.tolist(), k.tolist())]
    assert 0 < met.mean() < 1
