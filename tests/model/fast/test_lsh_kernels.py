"""The memory-efficient LSH kernel equals the plain reference chunk attention (model/lsh.py), on arbitrary sort
orders; gradcheck; fused and plain CPU paths; pieces and blocks change memory, not results."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lsh_refs import module, padding_mask

from genoformer.model import lsh
from genoformer.model.fast import lsh_kernels
from genoformer.model.fast.lsh_kernels import LSHAttentionFunction


@pytest.fixture(params=[True, False], ids=["fused-cpu", "plain"])
def kernel(request, monkeypatch):
    """Run a test with torch's fused CPU attention kernels and with the plain matmul path."""
    monkeypatch.setattr(lsh_kernels, "USE_FUSED_CPU", request.param)
    return request.param


def orders(B: int, H: int, R: int, Tp: int, real: torch.Tensor | None, g: torch.Generator) -> torch.Tensor:
    """Random sort orders [B, H, R, Tp], real tokens first as sort_order guarantees (not only hash orders)."""
    order = torch.stack([torch.randperm(Tp, generator=g) for _ in range(B * H * R)]).view(B, H, R, Tp)
    if real is not None:
        is_real = F.pad(real, (0, Tp - real.shape[1]))[:, None, None, :].expand(B, H, R, Tp).gather(-1, order)
        order = order.gather(-1, (~is_real).long().argsort(dim=-1, stable=True))
    return order


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("T, bucket_size", [(10, 4), (24, 4), (5, 8), (33, 2)])
def test_kernel_equals_the_plain_reference(kernel, causal, masked, T, bucket_size):
    """Outputs and q, k, v gradients, float64, with internal padding, a lone chunk and a padding mask."""
    g = torch.Generator().manual_seed(T)
    B, H, dh, R = 2, 2, 4, 3
    Tp = -(-T // bucket_size) * bucket_size
    q, v = (torch.randn(B, H, T, dh, generator=g, dtype=torch.float64) for _ in range(2))
    k = F.normalize(torch.randn(B, H, T, dh, generator=g, dtype=torch.float64), dim=-1)
    real = padding_mask(B, T, seed=T) if masked else None
    order = orders(B, H, R, Tp, real, g)
    grad = torch.randn(B, H, T, dh, generator=g, dtype=torch.float64)
    results = []
    for attention in (lsh.chunk_attention, lsh_kernels.chunk_attention):
        inputs = [t.clone().requires_grad_() for t in (q, k, v)]
        out = attention(*inputs, order, real, causal, bucket_size)
        out.backward(grad)
        results.append([out.detach()] + [t.grad for t in inputs])
    for reference, fast in zip(*results):
        assert torch.allclose(fast, reference, rtol=1e-10, atol=1e-12), (fast - reference).abs().max()


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_gradcheck_kernel(kernel, causal, masked):
    """The autograd Function alone, on arbitrary orders (not only hash orders), any T."""
    g = torch.Generator().manual_seed(3)
    B, H, T, dh, bs, R = 2, 2, 10, 4, 4, 3
    q, k, v = (torch.randn(B, H, T, dh, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3))
    real = padding_mask(B, T, seed=4) if masked else None
    order = orders(B, H, R, 12, real, g)
    f = lambda q, k, v: LSHAttentionFunction.apply(q, k, v, order, real, causal, bs)
    assert torch.autograd.gradcheck(f, (q, k, v), fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_and_plain_kernels_agree(monkeypatch, dtype):
    m = module(d=32, heads=4, bucket_size=8, n_hashes=3, causal=True, dtype=dtype, kernel=lsh_kernels.chunk_attention)
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
    m = module(d=32, heads=4, bucket_size=8, n_hashes=3, causal=True, dtype=torch.float64,
               kernel=lsh_kernels.chunk_attention)
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
    assert len(list(lsh_kernels._slices(3, 4, 48, torch.device("cpu")))) == {48: 12, 96: 6, 2 ** 16: 1}[rows]
    assert_setting_changes_nothing(monkeypatch, "SLICE_ROWS", rows, masked, seed=2)


@pytest.mark.parametrize("block_rows", [1, 40])  # one chunk per block; a few chunks per block
@pytest.mark.parametrize("masked", [False, True])
def test_attending_in_blocks_of_chunks_changes_nothing(monkeypatch, kernel, block_rows, masked):
    assert_setting_changes_nothing(monkeypatch, "BLOCK_ROWS", block_rows, masked, seed=3)
