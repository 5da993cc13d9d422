"""The LSH layer against dense references (lsh_refs), with the plain reference kernel and the fast kernel alike:
padding, batches, seeds, precision, positions, dropout, gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lsh_refs import attend, full_counts, lsh_counts, module, padding_mask

from genoformer.errors import UsageError
from genoformer.model import lsh
from genoformer.model.fast import lsh_kernels
from genoformer.model.lsh import LSHSelfAttention
from genoformer.model.lsh_inspect import inspect

KERNELS = {"reference": (lsh.chunk_attention, False), "fast-fused-cpu": (lsh_kernels.chunk_attention, True),
           "fast-plain": (lsh_kernels.chunk_attention, False)}


@pytest.fixture(params=list(KERNELS))
def kernel(request, monkeypatch):
    """The plain reference kernel, and the memory-efficient one with torch's fused CPU attention and without."""
    function, fused = KERNELS[request.param]
    monkeypatch.setattr(lsh_kernels, "USE_FUSED_CPU", fused)
    return function


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_one_chunk_is_full_attention(kernel, causal, masked):
    T = 21
    m = module(kernel=kernel, bucket_size=32, causal=causal)
    x = torch.randn(2, T, 32, dtype=torch.float64)
    real = padding_mask(2, T, seed=1) if masked else torch.ones(2, T, dtype=torch.bool)
    with torch.no_grad():
        got = m(x, mask=real if masked else None)
        want, _ = attend(m, x, full_counts(real, causal), real)
    assert torch.allclose(got[real], want[real], atol=1e-5), (got - want)[real].abs().max()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T", [16, 37])
def test_many_chunks_match_dense_reference_from_the_buckets(kernel, causal, T):
    m = module(kernel=kernel, bucket_size=4, n_hashes=3, causal=causal)
    x = torch.randn(2, T, 32, dtype=torch.float64)
    real = padding_mask(2, T, seed=T)
    positions = torch.arange(T) * 3 + 7
    with torch.no_grad():
        got = m(x, mask=real, positions=positions)
        buckets = inspect(m, x, mask=real, positions=positions).buckets
        want, _ = attend(m, x, lsh_counts(buckets, real, 4, causal), real, positions)
    assert torch.allclose(got[real], want[real], atol=1e-6), (got - want)[real].abs().max()
    # and LSH really is sparse here: full attention differs
    full, _ = attend(m, x, full_counts(real, causal), real, positions)
    assert not torch.allclose(got[real], full[real], atol=1e-3)


def test_error_against_full_attention_falls_with_more_hashes():
    """Clustered content: more rounds find more of each query's cluster (rotary off to isolate hashing)."""
    T, d = 256, 32
    flat = torch.zeros(T, dtype=torch.long)
    errors = {}
    for n_hashes in (1, 2, 4, 8):
        per_seed = []
        for seed in range(6):
            g = torch.Generator().manual_seed(seed)
            m = module(d=d, bucket_size=8, n_hashes=n_hashes, seed=seed)
            centres = torch.randn(4, d, generator=g, dtype=torch.float64) * 16
            x = centres[torch.randint(0, 4, (1, T), generator=g)] + 2 * torch.randn(1, T, d, generator=g,
                                                                                    dtype=torch.float64)
            real = torch.ones(1, T, dtype=torch.bool)
            with torch.no_grad():
                got = m(x, positions=flat)
                want, _ = attend(m, x, full_counts(real, False), real, flat)
            per_seed.append(float((got - want).norm() / want.norm()))
        errors[n_hashes] = sum(per_seed) / len(per_seed)
    assert errors[1] > errors[2] > errors[4] > errors[8], errors


@pytest.mark.parametrize("causal", [False, True])
def test_gradcheck_module(kernel, causal):
    m = module(kernel=kernel, d=8, heads=2, bucket_size=2, n_hashes=2, causal=causal)
    x = torch.randn(2, 9, 8, dtype=torch.float64, requires_grad=True)
    mask = padding_mask(2, 9, seed=2)
    params = [m.to_qk.weight, m.to_v.weight]
    assert torch.autograd.gradcheck(lambda x, *p: m(x, mask=mask), (x, *params), fast_mode=True)


def test_causal_never_attends_to_later_tokens(kernel):
    """No path from a later token to an earlier output: inspect shows none and the Jacobian is exactly zero.

    (Changing later tokens can still move chunk boundaries in the sorted order, so earlier
    outputs are not invariant to them, as in HF's and reformer-pytorch's causal LSH.)
    """
    T, i = 29, 13
    m = module(kernel=kernel, bucket_size=4, n_hashes=3, causal=True)
    x = torch.randn(1, T, 32, dtype=torch.float64, requires_grad=True)
    found = inspect(m, x, top_k=T)
    assert (found.top_positions <= torch.arange(T)[:, None]).all()
    m(x)[0, : i + 1].sum().backward()
    assert (x.grad[0, i + 1:] == 0).all() and (x.grad[0, : i + 1] != 0).any()
    # the first token has nothing before it: it attends to itself alone
    assert (found.top_positions[0, :, 0, 0] == 0).all() and (found.top_weights[0, :, 0, 0] > 0.999).all()


def test_padding_content_and_amount_do_not_change_real_outputs(kernel):
    m = module(kernel=kernel, bucket_size=4, n_hashes=3)
    x = torch.randn(2, 23, 32, dtype=torch.float64)
    mask = padding_mask(2, 23, seed=7)
    with torch.no_grad():
        base = m(x, mask=mask)
        other = m(torch.where(mask[..., None], x, 100 * torch.randn_like(x)), mask=mask)
        longer = m(F.pad(x, (0, 0, 0, 50)), mask=F.pad(mask, (0, 50)))
    assert torch.allclose(base[mask], other[mask], atol=1e-10)
    assert torch.allclose(base[mask], longer[:, :23][mask], atol=1e-10)


def test_output_does_not_depend_on_the_rest_of_the_batch(kernel):
    m = module(kernel=kernel, bucket_size=4, n_hashes=2)
    short, long = torch.randn(1, 18, 32, dtype=torch.float64), torch.randn(1, 61, 32, dtype=torch.float64)
    batch = torch.cat((F.pad(short, (0, 0, 0, 43)), long))
    mask = torch.ones(2, 61, dtype=torch.bool)
    mask[0, 18:] = False
    with torch.no_grad():
        alone, together = m(short), m(batch, mask=mask)
        counts = inspect(m, batch, mask=mask).n_buckets_per_sequence
    assert torch.allclose(alone[0], together[0, :18], atol=1e-10)
    assert counts.tolist() == [6, 16]


def test_hash_seed_fixes_buckets_and_global_rng_is_used_otherwise():
    m = module(bucket_size=4, n_hashes=2, dtype=torch.float32)
    x = torch.randn(2, 40, 32)
    a, b = inspect(m, x), inspect(m, x)
    assert torch.equal(m(x), m(x)) and torch.equal(a.buckets, b.buckets) and a.seed == b.seed == m.hash_seed
    m.hash_seed = 77
    c = inspect(m, x)
    assert (c.buckets != a.buckets).float().mean() > 0.3 and c.seed == 77
    m.hash_seed = None
    torch.manual_seed(5)
    expected = int(torch.randint(0, 2 ** 62, (1,)).item())
    torch.manual_seed(5)
    first = m(x)
    torch.manual_seed(5)
    assert torch.equal(m(x), first) and inspect(m, x).seed != expected  # RNG moved on: a fresh seed
    torch.manual_seed(5)
    assert inspect(m, x).seed == expected
    assert not torch.allclose(m(x), m(x))


def test_all_padding_is_finite_with_finite_gradients(kernel):
    m = module(kernel=kernel, bucket_size=4, dtype=torch.float32)
    x = torch.randn(2, 9, 32, requires_grad=True)
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[1, :1] = True  # one lone real token: attends to itself
    out = m(x, mask=mask)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all()
    assert torch.allclose(out[0], m.to_out.bias.expand(9, -1))
    v = x[1, 0] @ m.to_v.weight.T
    assert torch.allclose(out[1, 0], m.to_out(v), atol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_bf16_autocast_keeps_buckets_and_stays_finite(kernel, causal):
    m = module(kernel=kernel, bucket_size=8, n_hashes=2, causal=causal, dtype=torch.float32)
    x = torch.randn(2, 50, 32) * 10
    mask = padding_mask(2, 50, seed=8)
    with torch.no_grad():
        want, buckets = m(x, mask=mask), inspect(m, x, mask=mask).buckets
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, found = m(x, mask=mask), inspect(m, x, mask=mask).buckets
    assert torch.equal(found, buckets)
    assert torch.isfinite(got).all()
    assert (got.float() - want).abs().max() < 0.05 * want.abs().max()


def test_unit_length_matches_normalize_with_exact_gradients():
    x = torch.randn(3, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lsh.unit_length, (x,))
    x = x.detach()
    x[0, 0] = 0.0  # clamped norm: not differentiable, so compared with F.normalize's autograd only
    x.requires_grad_()
    assert torch.allclose(lsh.unit_length(x), F.normalize(x, dim=-1))
    g = torch.randn(3, 5, 6, dtype=torch.float64)
    mine, = torch.autograd.grad(lsh.unit_length(x), x, g)
    theirs, = torch.autograd.grad(F.normalize(x, dim=-1), x, g)
    assert torch.allclose(mine, theirs)


def test_positions_shift_scores_not_buckets():
    m = module(bucket_size=4, n_hashes=2, dtype=torch.float32)
    x = torch.randn(1, 40, 32)
    at_zero, near_million = m(x), m(x, positions=torch.arange(40) + 1_048_536)
    assert torch.allclose(at_zero, near_million, atol=1e-4)
    assert torch.equal(inspect(m, x).buckets, inspect(m, x, positions=torch.arange(40) * 5).buckets)
    assert not torch.allclose(m(x, positions=torch.arange(40) * 5), at_zero, atol=1e-3)


def test_dropout_only_in_training_and_replayable():
    m = LSHSelfAttention(32, 2, bucket_size=4, dropout=0.5, hash_seed=1)
    x = torch.randn(1, 16, 32)
    m.train()
    assert not torch.equal(m(x), m(x))
    torch.manual_seed(3)
    a = m(x)
    torch.manual_seed(3)
    assert torch.equal(a, m(x))
    m.eval()
    assert torch.equal(m(x), m(x))


def test_bad_arguments_raise_usage_errors():
    with pytest.raises(UsageError, match="heads"):
        LSHSelfAttention(30, 4)
    with pytest.raises(UsageError, match="bucket_size"):
        LSHSelfAttention(32, 4, bucket_size=0)
    m = LSHSelfAttention(32, 4, bucket_size=4)
    x = torch.randn(2, 10, 32)
    with pytest.raises(UsageError, match="mask"):
        m(x, mask=torch.ones(2, 9, dtype=torch.bool))
    with pytest.raises(UsageError, match="positions"):
        m(x, positions=torch.arange(9))


def test_precomputed_rotary_angles_equal_positions():
    """Reformer computes the rotary angles once per call and hands them to every layer."""
    from genoformer.model.positions import rotary_angles as angles

    m = module(bucket_size=4, n_hashes=2, dtype=torch.float32)
    x = torch.randn(1, 40, 32)
    positions = torch.arange(40) * 3 + 11
    assert torch.equal(m(x, positions=positions), m(x, rotary=angles(positions, m.dim_head)))
    with pytest.raises(UsageError, match="not both"):
        m(x, positions=positions, rotary=angles(positions, m.dim_head))
    with pytest.raises(UsageError, match="rotary angles must have shape"):
        m(x, rotary=angles(torch.arange(39), m.dim_head))
