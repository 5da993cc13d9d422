"""LSH attention against dense references written out here, plus hashing, padding, seeds, precision, gradients."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from genoformer.errors import UsageError
from genoformer.model import lsh, lsh_kernels
from genoformer.model.lsh import LSHSelfAttention
from genoformer.model.lsh_kernels import LSHAttentionFunction, bucket_factors, hash_buckets
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


def module(d=32, heads=2, bucket_size=4, n_hashes=2, causal=False, seed=0, dtype=torch.float64):
    torch.manual_seed(seed)
    return LSHSelfAttention(d, heads, bucket_size=bucket_size, n_hashes=n_hashes, causal=causal,
                            hash_seed=1000 + seed).to(dtype).eval()


def padding_mask(B: int, T: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, T, generator=g) > 0.25
    mask[0] = True
    return mask


@pytest.fixture(params=[True, False], ids=["fused-cpu", "plain"])
def kernel(request, monkeypatch):
    """Run a test with torch's fused CPU attention kernels and with the plain matmul path."""
    monkeypatch.setattr(lsh_kernels, "USE_FUSED_CPU", request.param)
    return request.param


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_one_chunk_is_full_attention(kernel, causal, masked):
    T = 21
    m = module(bucket_size=32, causal=causal)
    x = torch.randn(2, T, 32, dtype=torch.float64)
    real = padding_mask(2, T, seed=1) if masked else torch.ones(2, T, dtype=torch.bool)
    with torch.no_grad():
        got = m(x, mask=real if masked else None)
        want, _ = attend(m, x, full_counts(real, causal), real)
    assert torch.allclose(got[real], want[real], atol=1e-5), (got - want)[real].abs().max()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T", [16, 37])
def test_many_chunks_match_dense_reference_from_the_buckets(kernel, causal, T):
    m = module(bucket_size=4, n_hashes=3, causal=causal)
    x = torch.randn(2, T, 32, dtype=torch.float64)
    real = padding_mask(2, T, seed=T)
    positions = torch.arange(T) * 3 + 7
    with torch.no_grad():
        got = m(x, mask=real, positions=positions)
        buckets = m.inspect(x, mask=real, positions=positions).buckets
        want, _ = attend(m, x, lsh_counts(buckets, real, 4, causal), real, positions)
    assert torch.allclose(got[real], want[real], atol=1e-6), (got - want)[real].abs().max()
    # and LSH really is sparse here: full attention differs
    full, _ = attend(m, x, full_counts(real, causal), real, positions)
    assert not torch.allclose(got[real], full[real], atol=1e-3)


def test_inspect_matches_dense_weights():
    T = 30
    m = module(bucket_size=4, n_hashes=3)
    x = torch.randn(2, T, 32, dtype=torch.float64)
    real = padding_mask(2, T, seed=5)
    with torch.no_grad():
        found = m.inspect(x, mask=real, top_k=4)
        _, weights = attend(m, x, lsh_counts(found.buckets, real, 4, False), real)
        everything = m.inspect(x, mask=real, top_k=T)
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
    full = m.inspect(x, mask=real, top_k=6)
    assert full.queries == range(T) and full.top_positions.shape == (2, 2, T, 6)
    # 7 queries per block (B * heads * rounds * 2 * bucket_size * dh elements each): ranges cross block edges
    monkeypatch.setattr(lsh, "INSPECT_BLOCK_ELEMENTS", 7 * 2 * 2 * 3 * 2 * 4 * 16)
    for queries, rows in [(slice(10, 29), range(10, 29)), ((0, T), range(T)), (range(44, 45), range(44, 45)),
                          (slice(None, 5), range(5)), (slice(30, None), range(30, T)),
                          ((np.int64(3), torch.tensor(4)), range(3, 4)), ((20, 20), range(20, 20))]:
        part = m.inspect(x, mask=real, top_k=6, queries=queries)
        assert part.queries == rows and part.top_positions.shape == (2, 2, len(rows), 6)
        assert torch.equal(part.buckets, full.buckets) and part.n_buckets == full.n_buckets
        assert torch.equal(part.top_positions, full.top_positions[:, :, rows.start:rows.stop])
        assert torch.equal(part.top_weights, full.top_weights[:, :, rows.start:rows.stop])
    for bad in [(5, 3), (0, T + 1), (-1, 4), slice(0, 10, 2), (1.5, 3), (True, 3), "0-10", (1, 2, 3)]:
        with pytest.raises(UsageError, match="queries"):
            m.inspect(x, mask=real, queries=bad)


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
    m = module(d=8, heads=2, bucket_size=2, n_hashes=2, causal=causal)
    x = torch.randn(2, 9, 8, dtype=torch.float64, requires_grad=True)
    mask = padding_mask(2, 9, seed=2)
    params = [m.to_qk.weight, m.to_v.weight]
    assert torch.autograd.gradcheck(lambda x, *p: m(x, mask=mask), (x, *params), fast_mode=True)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_gradcheck_kernel(kernel, causal, masked):
    """The autograd Function alone, on arbitrary orders (not only hash orders), any T."""
    g = torch.Generator().manual_seed(3)
    B, H, T, dh, bs, R = 2, 2, 10, 4, 4, 3
    q, k, v = (torch.randn(B, H, T, dh, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    real = padding_mask(B, T, seed=4) if masked else None
    order = torch.stack([torch.randperm(12, generator=g) for _ in range(B * H * R)]).view(B, H, R, 12)
    if real is not None:  # real tokens first, as sort_order guarantees
        is_real = F.pad(real, (0, 2))[:, None, None, :].expand(B, H, R, 12).gather(-1, order)
        order = order.gather(-1, (~is_real).long().argsort(dim=-1, stable=True))
    f = lambda q, k, v: LSHAttentionFunction.apply(q, k, v, order, real, causal, bs)
    assert torch.autograd.gradcheck(f, (q, k, v), fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_and_plain_kernels_agree(monkeypatch, dtype):
    m = module(d=32, heads=4, bucket_size=8, n_hashes=3, causal=True, dtype=dtype)
    x = torch.randn(3, 45, 32, dtype=dtype)
    mask = padding_mask(3, 45, seed=6)
    results = []
    for fused in (True, False):
        monkeypatch.setattr(lsh_kernels, "USE_FUSED_CPU", fused)
        xg = x.clone().requires_grad_()
        out = m(xg, mask=mask)
        out.sin().sum().backward()
        results.append((out.detach(), xg.grad))
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=tol), (a - b).abs().max()


def assert_setting_changes_nothing(monkeypatch, name: str, value: int, masked: bool, seed: int) -> None:
    """Outputs and every gradient with lsh_kernels.<name> = value equal those with it unbounded (1e-12, float64)."""
    m = module(d=32, heads=4, bucket_size=8, n_hashes=3, causal=True, dtype=torch.float64)
    x = torch.randn(3, 45, 32, dtype=torch.float64)
    mask = padding_mask(3, 45, seed=seed) if masked else None
    results = []
    for setting in (10 ** 9, value):
        monkeypatch.setattr(lsh_kernels, name, setting)
        xg = x.clone().requires_grad_()
        out = m(xg, mask=mask)
        out.sin().sum().backward()
        results.append((out.detach(), xg.grad, *(p.grad.clone() for p in m.parameters())))
        m.zero_grad()
    for a, b in zip(*results):
        assert torch.allclose(a, b, atol=1e-12), (a - b).abs().max()


@pytest.mark.parametrize("rows", [48, 96, 2 ** 16])  # one head, a few heads, whole sequences at once
@pytest.mark.parametrize("masked", [False, True])
def test_attending_in_pieces_changes_nothing(monkeypatch, rows, masked):
    monkeypatch.setattr(lsh_kernels, "SLICE_ROWS", rows)
    assert len(list(lsh_kernels._slices(3, 4, 48))) == {48: 12, 96: 6, 2 ** 16: 1}[rows]
    assert_setting_changes_nothing(monkeypatch, "SLICE_ROWS", rows, masked, seed=2)


@pytest.mark.parametrize("block_rows", [1, 40])  # one chunk per block; a few chunks per block
@pytest.mark.parametrize("masked", [False, True])
def test_attending_in_blocks_of_chunks_changes_nothing(monkeypatch, kernel, block_rows, masked):
    assert_setting_changes_nothing(monkeypatch, "BLOCK_ROWS", block_rows, masked, seed=3)


def test_causal_never_attends_to_later_tokens():
    """No path from a later token to an earlier output: inspect shows none and the Jacobian is exactly zero.

    (Changing later tokens can still move chunk boundaries in the sorted order, so earlier
    outputs are not invariant to them, as in HF's and reformer-pytorch's causal LSH.)
    """
    T, i = 29, 13
    m = module(bucket_size=4, n_hashes=3, causal=True)
    x = torch.randn(1, T, 32, dtype=torch.float64, requires_grad=True)
    found = m.inspect(x, top_k=T)
    assert (found.top_positions <= torch.arange(T)[:, None]).all()
    m(x)[0, : i + 1].sum().backward()
    assert (x.grad[0, i + 1:] == 0).all() and (x.grad[0, : i + 1] != 0).any()
    # the first token has nothing before it: it attends to itself alone
    assert (found.top_positions[0, :, 0, 0] == 0).all() and (found.top_weights[0, :, 0, 0] > 0.999).all()


def test_padding_content_and_amount_do_not_change_real_outputs():
    m = module(bucket_size=4, n_hashes=3)
    x = torch.randn(2, 23, 32, dtype=torch.float64)
    mask = padding_mask(2, 23, seed=7)
    with torch.no_grad():
        base = m(x, mask=mask)
        other = m(torch.where(mask[..., None], x, 100 * torch.randn_like(x)), mask=mask)
        longer = m(F.pad(x, (0, 0, 0, 50)), mask=F.pad(mask, (0, 50)))
    assert torch.allclose(base[mask], other[mask], atol=1e-10)
    assert torch.allclose(base[mask], longer[:, :23][mask], atol=1e-10)


def test_output_does_not_depend_on_the_rest_of_the_batch():
    m = module(bucket_size=4, n_hashes=2)
    short, long = torch.randn(1, 18, 32, dtype=torch.float64), torch.randn(1, 61, 32, dtype=torch.float64)
    batch = torch.cat((F.pad(short, (0, 0, 0, 43)), long))
    mask = torch.ones(2, 61, dtype=torch.bool)
    mask[0, 18:] = False
    with torch.no_grad():
        alone, together = m(short), m(batch, mask=mask)
        counts = m.inspect(batch, mask=mask).n_buckets_per_sequence
    assert torch.allclose(alone[0], together[0, :18], atol=1e-10)
    assert counts.tolist() == [6, 16]


def test_hash_seed_fixes_buckets_and_global_rng_is_used_otherwise():
    m = module(bucket_size=4, n_hashes=2, dtype=torch.float32)
    x = torch.randn(2, 40, 32)
    a, b = m.inspect(x), m.inspect(x)
    assert torch.equal(m(x), m(x)) and torch.equal(a.buckets, b.buckets) and a.seed == b.seed == m.hash_seed
    m.hash_seed = 77
    c = m.inspect(x)
    assert (c.buckets != a.buckets).float().mean() > 0.3 and c.seed == 77
    m.hash_seed = None
    torch.manual_seed(5)
    expected = int(torch.randint(0, 2 ** 62, (1,)).item())
    torch.manual_seed(5)
    first = m(x)
    torch.manual_seed(5)
    assert torch.equal(m(x), first) and m.inspect(x).seed != expected  # RNG moved on: a fresh seed
    torch.manual_seed(5)
    assert m.inspect(x).seed == expected
    assert not torch.allclose(m(x), m(x))


def test_all_padding_is_finite_with_finite_gradients(kernel):
    m = module(bucket_size=4, dtype=torch.float32)
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
def test_bf16_autocast_keeps_buckets_and_stays_finite(causal):
    m = module(bucket_size=8, n_hashes=2, causal=causal, dtype=torch.float32)
    x = torch.randn(2, 50, 32) * 10
    mask = padding_mask(2, 50, seed=8)
    with torch.no_grad():
        want, buckets = m(x, mask=mask), m.inspect(x, mask=mask).buckets
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got, found = m(x, mask=mask), m.inspect(x, mask=mask).buckets
    assert torch.equal(found, buckets)
    assert torch.isfinite(got).all()
    assert (got.float() - want).abs().max() < 0.05 * want.abs().max()


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
    """Buckets against argmax over [xR; -xR] written out here, with exact ties (zero and repeated
    vectors) and more than 256 buckets per factor (the wide index path)."""
    def by_definition(x, factors, n_hashes, seed):
        generator = torch.Generator().manual_seed(seed)
        B, H, T, dh = x.shape
        buckets = torch.zeros(B, H, n_hashes, T, dtype=torch.long)
        for n in factors:
            rotations = torch.randn(H, dh, n_hashes * (n // 2), generator=generator)
            projected = torch.einsum("bhtd,hdr->bhtr", x, rotations).view(B, H, T, n_hashes, n // 2)
            buckets = buckets * n + torch.cat([projected, -projected], -1).argmax(-1).transpose(-1, -2)
        return buckets

    monkeypatch.setattr(lsh_kernels, "ROUND_BY_ROUND_DEVICES", ("cpu",) if round_by_round else ())
    x = torch.randn(2, 3, 40, 8)
    x[0, 0, :5] = 0.0  # every projection ties
    x[1, 2, 10:20] = x[1, 2, 9]
    x[0, 1] = torch.randint(-1, 2, (40, 8)).float()  # small integers: ties between +p and -p
    for factors in [(2,), (8,), (6, 10), (600,), (514, 4)]:
        assert torch.equal(hash_buckets(x, factors, 3, seed=7), by_definition(x, factors, 3, seed=7)), factors


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
    found = m.inspect(x, top_k=1)
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


def test_positions_shift_scores_not_buckets():
    m = module(bucket_size=4, n_hashes=2, dtype=torch.float32)
    x = torch.randn(1, 40, 32)
    at_zero, near_million = m(x), m(x, positions=torch.arange(40) + 1_048_536)
    assert torch.allclose(at_zero, near_million, atol=1e-4)
    assert torch.equal(m.inspect(x).buckets, m.inspect(x, positions=torch.arange(40) * 5).buckets)
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
    with pytest.raises(UsageError, match="top_k"):
        m.inspect(x, top_k=0)


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


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_attend_backward_by_hand_equals_autograd(kernel, causal, masked):
    """The reversible backward's hand-written recompute: output, input gradient (added to what d_x held)
    and the projections' row gradients equal autograd through attend, group after group in one workspace
    (a single head, two heads, all four), with internal padding (45 tokens), a mask and odd positions."""
    from genoformer.model.workspace import Workspace

    torch.manual_seed(0)
    m = LSHSelfAttention(32, 4, causal=causal, bucket_size=8, n_hashes=2).double()
    x = torch.randn(2, 45, 32, dtype=torch.float64)
    mask = torch.ones(2, 45, dtype=torch.bool)
    mask[1, 29:] = False
    mask = mask if masked else None
    positions = torch.arange(45) * 3 + 7
    workspace = Workspace(x.device)
    for heads in (slice(2, 3), slice(0, 2), slice(0, 4), slice(3, 4)):
        width = (heads.stop - heads.start) * m.dim_head
        grad, held = torch.randn(2, 45, width, dtype=torch.float64), torch.randn_like(x)
        state = torch.get_rng_state()  # attend draws its hash seed from it
        xg = x.clone().requires_grad_()
        expected = m.attend(xg, mask, positions, heads=heads)
        expected.backward(grad)
        torch.set_rng_state(state)
        out, d_x, row_grads = m.attend_backward(x, grad, held.clone(), workspace, heads, mask=mask, positions=positions)
        assert torch.allclose(out, expected.detach(), rtol=0, atol=1e-12)
        assert torch.allclose(d_x, held + xg.grad, rtol=1e-10, atol=1e-12)
        assert {id(p) for p, _, _ in row_grads} == {id(m.to_qk.weight), id(m.to_v.weight)}
        for param, rows, grad_rows in row_grads:
            assert rows == slice(heads.start * m.dim_head, heads.stop * m.dim_head)
            assert torch.allclose(grad_rows, param.grad[rows], rtol=1e-10, atol=1e-12)
            assert not param.grad[:rows.start].any() and not param.grad[rows.stop:].any()
        torch.set_rng_state(state)
        _, fresh_d_x, _ = m.attend_backward(x, grad, None, workspace, heads, mask=mask, positions=positions)
        assert torch.allclose(fresh_d_x, xg.grad, rtol=1e-10, atol=1e-12)
        m.zero_grad()


def test_attend_backward_only_without_autocast_in_full_precision():
    m = LSHSelfAttention(32, 4)
    assert m.can_attend_backward(torch.zeros(1, 2, 32)) and m.can_attend_backward(torch.zeros(1, 2, 32).double())
    assert not m.can_attend_backward(torch.zeros(1, 2, 32, dtype=torch.bfloat16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not m.can_attend_backward(torch.zeros(1, 2, 32))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("group_rows", [1, 2 ** 16])  # a head at a time; all heads at once
def test_no_grad_forward_by_head_groups_equals_autograd_forward(monkeypatch, causal, group_rows):
    """Without autograd (inference, the reversible forward) the layer runs head group by head group in one
    workspace; it gives what the autograd path gives and leaves the global RNG where one seed draw does."""
    monkeypatch.setattr(lsh, "GROUP_ROWS", group_rows)
    torch.manual_seed(0)
    m = LSHSelfAttention(32, 4, causal=causal, bucket_size=8, n_hashes=2).double()
    x = torch.randn(2, 45, 32, dtype=torch.float64)
    mask = torch.ones(2, 45, dtype=torch.bool)
    mask[1, 29:] = False
    positions = torch.arange(45) * 3 + 7
    state = torch.get_rng_state()
    expected = m(x.clone().requires_grad_(), mask, positions)
    after_expected = torch.get_rng_state()
    torch.set_rng_state(state)
    with torch.no_grad():
        got = m(x, mask, positions)
    assert torch.equal(torch.get_rng_state(), after_expected)
    assert torch.allclose(got, expected.detach(), rtol=1e-12, atol=1e-12)
    assert len(m.head_groups(2, 45)) == {1: 4, 2 ** 16: 1}[group_rows]
