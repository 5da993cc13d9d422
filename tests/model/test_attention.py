"""Full and local attention against a dense softmax reference written out here, plus masking, causality, rotary."""
from __future__ import annotations

import pytest
import torch

from genoformer.model import FullAttention, LocalAttention
from genoformer.model import attention
from genoformer.model.positions import apply_rotary, rotary_angles


def reference(module, x: torch.Tensor, allowed: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
    """Dense attention with an explicit [B, T, T] boolean mask; a query with no allowed key attends to itself."""
    B, T, d = x.shape
    h, dh = module.heads, module.dim_head
    positions = torch.arange(T) if positions is None else positions
    cos, sin = rotary_angles(positions, dh)
    heads = lambda w: (x @ w.weight.T).view(B, T, h, dh).transpose(1, 2)
    q, k, v = heads(module.to_q), heads(module.to_k), heads(module.to_v)
    q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
    eye = torch.eye(T, dtype=torch.bool)
    allowed = allowed | (eye & ~allowed.any(-1, keepdim=True))
    scores = (q @ k.transpose(-1, -2)) / dh ** 0.5
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    out = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, d)
    return module.to_out(out)


def band(T: int, w: int) -> torch.Tensor:
    """Local pattern: key block is the query's block or the one before."""
    blk = torch.arange(T) // w
    return (blk[None, :] == blk[:, None]) | (blk[None, :] == blk[:, None] - 1)


def padding_mask(B: int, T: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(B, T, generator=g) > 0.3
    mask[-1] = False  # one window of padding only
    return mask


def allowed_pattern(kind: str, T: int, w: int, mask: torch.Tensor | None, causal: bool) -> torch.Tensor:
    allowed = band(T, w) if kind == "local" else torch.ones(T, T, dtype=torch.bool)
    if causal:
        allowed = allowed & torch.ones(T, T, dtype=torch.bool).tril()
    allowed = allowed[None].expand(2, T, T)
    if mask is not None:
        allowed = allowed & mask[:, None, :]
    return allowed


def make(kind: str, causal: bool, w: int = 8, d: int = 32, heads: int = 4):
    if kind == "local":
        return LocalAttention(d, heads, causal=causal, window_size=w)
    return FullAttention(d, heads, causal=causal)


@pytest.mark.parametrize("kind", ["full", "local"])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("T", [8, 29, 40])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_dense_reference(kind, causal, T, masked):
    torch.manual_seed(T)
    module = make(kind, causal).double().eval()
    x = torch.randn(2, T, 32, dtype=torch.float64)
    mask = padding_mask(2, T, seed=T) if masked else None
    with torch.no_grad():
        got = module(x, mask=mask)
        want = reference(module, x, allowed_pattern(kind, T, 8, mask, causal))
    assert torch.allclose(got, want, rtol=1e-5, atol=1e-5), (got - want).abs().max()


@pytest.mark.parametrize("kind", ["full", "local"])
@pytest.mark.parametrize("causal", [False, True])
def test_gradients_match_dense_reference(kind, causal, monkeypatch):
    """Local attention has a hand-written backward; check it (inputs and weights) against autograd of the reference."""
    monkeypatch.setattr(attention, "CHUNK_SCORES", 3 * 4 * 8 * 16)  # several chunks of blocks, one of them ragged
    torch.manual_seed(7)
    module = make(kind, causal).double()
    x = torch.randn(2, 37, 32, dtype=torch.float64)
    mask = padding_mask(2, 37, seed=8)
    weights = torch.randn(2, 37, 32, dtype=torch.float64)

    def grads(fn):
        module.zero_grad(set_to_none=True)
        xx = x.clone().requires_grad_()
        (fn(xx) * weights).sum().backward()
        return [xx.grad] + [p.grad for p in module.parameters()]

    got = grads(lambda xx: module(xx, mask))
    want = grads(lambda xx: reference(module, xx, allowed_pattern(kind, 37, 8, mask, causal)))
    for a, b in zip(got, want):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-9), (a - b).abs().max()


def test_local_window_covers_whole_sequence_equals_full():
    """With one block covering T, local attention is full attention: an independent cross-check of the two."""
    torch.manual_seed(0)
    local = LocalAttention(32, 4, window_size=64)
    full = FullAttention(32, 4)
    full.load_state_dict(local.state_dict())
    x = torch.randn(2, 50, 32)
    mask = padding_mask(2, 50, seed=1)
    assert torch.allclose(local(x, mask), full(x, mask), atol=1e-5)


@pytest.mark.parametrize("kind", ["full", "local"])
def test_causal_outputs_ignore_the_future(kind):
    torch.manual_seed(1)
    module = make(kind, causal=True).eval()
    x = torch.randn(1, 37, 32)
    i = 20
    changed = x.clone()
    changed[:, i + 1:] = torch.randn(1, 37 - i - 1, 32)
    a, b = module(x), module(changed)
    assert torch.allclose(a[:, : i + 1], b[:, : i + 1], atol=1e-6)
    assert not torch.allclose(a[:, i + 1:], b[:, i + 1:], atol=1e-3)


@pytest.mark.parametrize("kind", ["full", "local"])
@pytest.mark.parametrize("causal", [False, True])
def test_padding_content_does_not_reach_real_outputs(kind, causal):
    torch.manual_seed(2)
    module = make(kind, causal).eval()
    x = torch.randn(2, 33, 32)
    mask = padding_mask(2, 33, seed=3)
    other = torch.where(mask[..., None], x, torch.randn_like(x) * 100)
    a, b = module(x, mask), module(other, mask)
    assert torch.allclose(a[mask], b[mask], atol=1e-5)


@pytest.mark.parametrize("kind", ["full", "local"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("causal", [False, True])
def test_half_precision_masks_stay_finite(kind, dtype, causal):
    torch.manual_seed(3)
    module = make(kind, causal).to(dtype).eval()
    x = torch.randn(2, 24, 32).to(dtype) * 30  # large activations, large scores
    mask = padding_mask(2, 24, seed=4)
    mask[0, :5] = False  # causal queries before any real key
    with torch.no_grad():
        out = module(x, mask)
    assert torch.isfinite(out).all()


def test_rotary_scores_depend_only_on_offset_near_one_million():
    torch.manual_seed(4)
    dh = 64
    q, k = torch.randn(dh), torch.randn(dh)
    for offset in (0, 1, 37, 1000):
        scores = []
        for start in (0, 1_000_000, 1_048_576):
            cos, sin = rotary_angles(torch.tensor([start, start + offset]), dh)
            qr = apply_rotary(q[None], cos[:1], sin[:1])
            kr = apply_rotary(k[None], cos[1:], sin[1:])
            scores.append(float(qr @ kr.T))
        assert torch.isfinite(torch.tensor(scores)).all()
        assert max(scores) - min(scores) < 1e-4 * (1 + abs(scores[0])), (offset, scores)
    # and the offset matters: otherwise the check above is empty
    cos, sin = rotary_angles(torch.tensor([0, 37]), dh)
    assert abs(float(apply_rotary(q[None], cos[:1], sin[:1]) @ apply_rotary(k[None], cos[:1], sin[:1]).T)
               - float(apply_rotary(q[None], cos[:1], sin[:1]) @ apply_rotary(k[None], cos[1:], sin[1:]).T)) > 1e-3


@pytest.mark.parametrize("kind", ["full", "local"])
def test_window_start_near_one_million_gives_the_same_outputs(kind):
    torch.manual_seed(5)
    module = make(kind, causal=False).eval()
    x = torch.randn(1, 40, 32)
    near = module(x, positions=torch.arange(40) + 1_048_536)
    at_zero = module(x, positions=torch.arange(40))
    assert torch.isfinite(near).all()
    assert torch.allclose(near, at_zero, atol=1e-4)
    # positions are used: spreading the tokens apart changes the output
    assert not torch.allclose(module(x, positions=torch.arange(40) * 3), at_zero, atol=1e-3)


def test_dropout_acts_only_in_training():
    torch.manual_seed(6)
    for module in (FullAttention(32, 4, dropout=0.5), LocalAttention(32, 4, dropout=0.5, window_size=8)):
        x = torch.randn(1, 16, 32)
        module.train()
        assert not torch.allclose(module(x), module(x))
        module.eval()
        assert torch.equal(module(x), module(x))


def test_rotary_is_the_complex_rotation_and_its_gradient_is_exact():
    """apply_rotary (a custom autograd Function) against rotation written as complex multiplication."""
    positions = torch.tensor([0, 1, 7, 1_000_003])
    x = torch.randn(2, 3, 4, 8, dtype=torch.float64, requires_grad=True)
    cos, sin = rotary_angles(positions, 8)
    half = 4
    angles = positions.double()[:, None] * 10000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    as_complex = torch.complex(x[..., :half], x[..., half:]) * torch.polar(torch.ones_like(angles), angles)
    expected = torch.cat((as_complex.real, as_complex.imag), -1)
    assert torch.allclose(apply_rotary(x, cos, sin), expected, atol=1e-6)  # the tables are float32
    assert torch.autograd.gradcheck(lambda t: apply_rotary(t, cos.double(), sin.double()), (x,))
    heads_last = torch.randn(2, 4, 3, 8, dtype=torch.float64, requires_grad=True)  # [B, T, heads, dh]
    assert torch.autograd.gradcheck(lambda t: apply_rotary(t, cos.double()[:, None], sin.double()[:, None]),
                                    (heads_last,))
