"""Pre-norm LSH attention run by hand (fast/lsh.py) equals autograd through the readable layer: forward by head
groups, attend_backward, and the whole branch's backward_by_hand."""
from __future__ import annotations

import pytest
import torch

from genoformer.model.fast import lsh as fast_lsh
from genoformer.model.fast import lsh_kernels
from genoformer.model.fast.lsh import PreNormLSH, attend_backward, full_precision, head_groups, project_by_heads
from genoformer.model.fast.workspace import Workspace
from genoformer.model.lsh import LSHSelfAttention
from genoformer.model.prenorm import PreNorm
from genoformer.model.reversible import RngState


@pytest.fixture(params=[True, False], ids=["fused-cpu", "plain"])
def kernel(request, monkeypatch):
    """Run a test with torch's fused CPU attention kernels and with the plain matmul path."""
    monkeypatch.setattr(lsh_kernels, "USE_FUSED_CPU", request.param)
    return request.param


def layer(causal: bool = False, dropout: float = 0.0) -> LSHSelfAttention:
    """A float64 layer with the fast kernel, as the Reformer builds it."""
    torch.manual_seed(0)
    return LSHSelfAttention(32, 4, causal=causal, dropout=dropout, bucket_size=8, n_hashes=2,
                            kernel=lsh_kernels.chunk_attention).double()


def inputs(masked: bool = True):
    """x [2, 45, 32] (internal padding to 48), a mask and odd positions."""
    x = torch.randn(2, 45, 32, dtype=torch.float64)
    mask = torch.ones(2, 45, dtype=torch.bool)
    mask[1, 29:] = False
    return x, mask if masked else None, torch.arange(45) * 3 + 7


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_attend_backward_by_hand_equals_autograd(kernel, causal, masked):
    """The hand-written recompute: output, input gradient (added to what d_x held) and the projections' row
    gradients equal autograd through attend, group after group in one workspace (a single head, two heads,
    all four)."""
    m = layer(causal)
    x, mask, positions = inputs(masked)
    workspace = Workspace(x.device)
    for heads in (slice(2, 3), slice(0, 2), slice(0, 4), slice(3, 4)):
        width = (heads.stop - heads.start) * m.dim_head
        grad, held = torch.randn(2, 45, width, dtype=torch.float64), torch.randn_like(x)
        state = torch.get_rng_state()  # attend draws its hash seed from it
        xg = x.clone().requires_grad_()
        expected = m.attend(xg, mask, positions, heads=heads)
        expected.backward(grad)
        torch.set_rng_state(state)
        out, d_x, row_grads = attend_backward(m, x, grad, held.clone(), workspace, heads, mask=mask,
                                              positions=positions)
        assert torch.allclose(out, expected.detach(), rtol=0, atol=1e-12)
        assert torch.allclose(d_x, held + xg.grad, rtol=1e-10, atol=1e-12)
        assert {id(p) for p, _, _ in row_grads} == {id(m.to_qk.weight), id(m.to_v.weight)}
        for param, rows, grad_rows in row_grads:
            assert rows == slice(heads.start * m.dim_head, heads.stop * m.dim_head)
            assert torch.allclose(grad_rows, param.grad[rows], rtol=1e-10, atol=1e-12)
            assert not param.grad[:rows.start].any() and not param.grad[rows.stop:].any()
        torch.set_rng_state(state)
        _, fresh_d_x, _ = attend_backward(m, x, grad, None, workspace, heads, mask=mask, positions=positions)
        assert torch.allclose(fresh_d_x, xg.grad, rtol=1e-10, atol=1e-12)
        m.zero_grad()


def test_by_hand_only_in_full_precision_without_autocast():
    assert full_precision(torch.zeros(1, 2, 32)) and full_precision(torch.zeros(1, 2, 32).double())
    assert not full_precision(torch.zeros(1, 2, 32, dtype=torch.bfloat16))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not full_precision(torch.zeros(1, 2, 32))


def test_live_output_dropout_keeps_the_branch_under_autograd():
    branch = PreNorm(32, layer(dropout=0.1))
    x = torch.zeros(1, 2, 32, dtype=torch.float64)
    assert not PreNormLSH(branch.train()).can_run_by_hand(x)
    assert PreNormLSH(branch.eval()).can_run_by_hand(x)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("group_rows", [1, 2 ** 16])  # a head at a time; all heads at once
def test_forward_by_head_groups_equals_autograd_forward(monkeypatch, causal, group_rows):
    """Without autograd (inference, the reversible forward) the layer runs head group by head group in one
    workspace; it gives what the autograd path gives and leaves the global RNG where one seed draw does."""
    monkeypatch.setattr(fast_lsh, "GROUP_ROWS", group_rows)
    m = layer(causal)
    x, mask, positions = inputs()
    state = torch.get_rng_state()
    expected = m(x.clone().requires_grad_(), mask, positions)
    after_expected = torch.get_rng_state()
    torch.set_rng_state(state)
    groups = head_groups(m, 2, 45, torch.device("cpu"))
    assert len(groups) == {1: 4, 2 ** 16: 1}[group_rows]
    got = project_by_heads(m, x, mask, positions, None, groups, None, Workspace(x.device))
    assert torch.equal(torch.get_rng_state(), after_expected)
    assert torch.allclose(got, expected.detach(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("autocast", [False, True], ids=["by-hand", "autocast"])
def test_branch_forward_and_backward_by_hand_equal_autograd(monkeypatch, autocast):
    """The adapter as the engine drives it: forward_by_hand keeps each group's state, backward_by_hand uses it,
    and both equal autograd through PreNorm(LSH) (under autocast: each head group through autograd)."""
    monkeypatch.setattr(fast_lsh, "GROUP_ROWS", 192)  # two heads per group (2 x 45 rows each)
    dtype = torch.float32 if autocast else torch.float64
    branch = PreNorm(32, layer()).to(dtype).train()
    with torch.no_grad():
        branch.norm.weight.uniform_(0.5, 1.5)
    x, mask, positions = (t.to(dtype) if t is not None and t.is_floating_point() else t for t in inputs())
    grad = torch.randn(2, 45, 32, dtype=dtype)
    by_hand = PreNormLSH(branch)
    assert by_hand.can_run_by_hand(x)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        torch.manual_seed(3)
        rng = RngState(x.device)
        xg = x.clone().requires_grad_()
        expected = branch(xg, mask=mask, positions=positions)
        params = list(branch.parameters())
        expected_grads = torch.autograd.grad(expected, [xg, *params], grad.to(expected.dtype))
        torch.manual_seed(3)
        workspace, kept = Workspace(x.device), []
        forward = by_hand.forward_by_hand(x, workspace=workspace, keep=kept, mask=mask, positions=positions)
        assert len(kept) == (0 if autocast else 2)  # a KeptAttention per group, in full precision
        out, d_x, grads = by_hand.backward_by_hand(x, grad, rng=rng, workspace=workspace, kept=kept or None,
                                                   mask=mask, positions=positions)
    tol = dict(rtol=2e-2, atol=2e-2) if autocast else dict(rtol=1e-10, atol=1e-12)
    assert torch.allclose(forward.float(), expected.detach().float(), **tol)
    assert torch.allclose(out.float(), expected.detach().float(), **tol)
    for got, want in zip([d_x, *grads], expected_grads):
        assert torch.allclose(got.float(), want.float(), **tol), (got - want).abs().max()
