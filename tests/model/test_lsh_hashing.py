"""Angular LSH: buckets by the argmax definition, scale invariance, antipodes, factorised bucket counts."""
from __future__ import annotations

import math

import pytest
import torch
from lsh_refs import hash_by_definition

from genoformer.model import sizing
from genoformer.model.lsh import LSHSelfAttention
from genoformer.model.lsh_hashing import bucket_factors, hash_buckets
from genoformer.model.lsh_inspect import inspect


def test_angular_hashing_is_scale_invariant_and_antipodal():
    x = torch.randn(2, 3, 50, 16)
    for factors in [(8,), (6, 10)]:
        b = hash_buckets(x, factors, n_hashes=3, seed=4)
        assert torch.equal(hash_buckets(3.5 * x, factors, 3, seed=4), b)
        flipped = hash_buckets(-x, factors, 3, seed=4)
        if len(factors) == 1:
            assert torch.equal(flipped, (b + factors[0] // 2) % factors[0])
        else:
            n1, n2 = factors
            assert torch.equal(flipped, ((b // n2 + n1 // 2) % n1) * n2 + (b % n2 + n2 // 2) % n2)
        assert not torch.equal(hash_buckets(x, factors, 3, seed=5), b)


@pytest.mark.parametrize("round_by_round", [True, False])  # the CPU path, and the batched one GPUs take
def test_hash_buckets_match_the_argmax_definition_ties_included(monkeypatch, round_by_round):
    """Buckets against argmax over [xR; -xR] written out (lsh_refs.py), with exact ties (zero and repeated
    vectors) and more than 256 buckets per factor (the wide index path)."""
    monkeypatch.setattr(sizing, "SMALL_PIECE_DEVICES", ("cpu",) if round_by_round else ())
    x = torch.randn(2, 3, 40, 8)
    x[0, 0, :5] = 0.0  # every projection ties
    x[1, 2, 10:20] = x[1, 2, 9]
    x[0, 1] = torch.randint(-1, 2, (40, 8)).float()  # small integers: ties between +p and -p
    for factors in [(2,), (8,), (6, 10), (600,), (514, 4)]:
        assert torch.equal(hash_buckets(x, factors, 3, seed=7), hash_by_definition(x, factors, 3, seed=7)[0]), factors


def test_large_bucket_counts_hash_factorised_in_range_and_balanced():
    assert bucket_factors(128 * 64, 64) == (128,)
    assert bucket_factors(1024 * 64, 64) == (32, 32)
    for length in (129 * 64, 1000 * 64 + 1, 16384 * 64):
        n = math.ceil(length / 64)
        factors = bucket_factors(length, 64)
        assert len(factors) == 2 and all(f % 2 == 0 for f in factors)
        assert n <= math.prod(factors) <= 1.2 * n and max(factors) <= 2 * math.isqrt(n) + 2
    m = LSHSelfAttention(64, 2, bucket_size=4, n_hashes=2, hash_seed=0)
    x = torch.randn(1, 1200, 64)
    found = inspect(m, x, top_k=1)
    assert found.n_buckets == 324  # 300 rounded up to 18 x 18
    ids = found.buckets.flatten()
    assert ids.min() >= 0 and ids.max() < 324
    per_bucket = torch.bincount(ids, minlength=324).float()
    assert (per_bucket > 0).float().mean() > 0.95 and per_bucket.max() < 4 * per_bucket.mean()
    # 2**16 tokens in 2**16 buckets: unfactorised, 32,768 projections per token (8 GiB in float32);
    # factorised, 2 x 128
    assert bucket_factors(2 ** 16, 1) == (256, 256)
    many = hash_buckets(torch.randn(1, 1, 2 ** 16, 64), (256, 256), n_hashes=1, seed=0)
    assert many.min() >= 0 and many.max() < 2 ** 16 and many.unique().numel() > 2 ** 13
