"""The pre-norm feed-forward differentiated by hand gives autograd's output and gradients."""
from __future__ import annotations

import pytest
import torch

from genoformer.model.fast.feedforward import PreNormFeedForward, pre_norm_backward
from genoformer.model.feedforward import FeedForward
from genoformer.model.prenorm import PreNorm
from genoformer.model.reversible import RngState


def branch(d: int = 16, mult: int = 3, dtype=torch.float64) -> PreNorm:
    g = PreNorm(d, FeedForward(d, mult=mult)).to(dtype)
    with torch.no_grad():  # a LayerNorm that is not the identity, so its gradients are tested too
        g.norm.weight.uniform_(0.5, 1.5)
        g.norm.bias.uniform_(-0.5, 0.5)
    return g


def autograd_result(g: PreNorm, x: torch.Tensor, grad: torch.Tensor):
    x = x.detach().requires_grad_()
    out = g(x)
    params = [p for p in g.parameters() if p.requires_grad]
    grads = torch.autograd.grad(out, [x, *params], grad)
    return out.detach(), grads[0], {id(p): d for p, d in zip(params, grads[1:])}


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_pre_norm_backward_equals_autograd(dtype, tol):
    torch.manual_seed(0)
    g = branch(dtype=dtype)
    x, grad = torch.randn(2, 40, 16, dtype=dtype).unbind(0)
    expected_out, expected_dx, expected = autograd_result(g, x, grad)
    out, d_x = torch.empty_like(x), torch.empty_like(x)
    totals = {id(p): torch.zeros_like(p) for p in g.parameters()}
    hidden = (torch.empty(40, 48, dtype=dtype), torch.empty(40, 48, dtype=dtype))
    pre_norm_backward(g.norm, g.fn, x, grad, out, d_x, totals, hidden)
    # bit for bit: the reversible backward rebuilds its inputs by subtracting exactly this output
    assert torch.equal(out, expected_out)
    torch.testing.assert_close(d_x, expected_dx, rtol=tol, atol=tol)
    for p in g.parameters():
        torch.testing.assert_close(totals[id(p)], expected[id(p)], rtol=tol, atol=tol)
    pre_norm_backward(g.norm, g.fn, x, grad, out, d_x, totals, hidden)  # gradients add up over calls (chunks)
    for p in g.parameters():
        torch.testing.assert_close(totals[id(p)], 2 * expected[id(p)], rtol=tol, atol=tol)


@pytest.mark.parametrize("batch, chunks", [(1, [0, 14, 28, 40]), (2, [0, 20, 40]), (2, None)])
def test_backward_by_hand_over_chunks_equals_autograd(batch, chunks):
    """The adapter over sequence chunks (as g_bounds cuts them: the first is the largest; written in place
    for one sequence, copied for two), a frozen
    parameter getting no gradient."""
    torch.manual_seed(0)
    g = branch()
    g.fn.expand.bias.requires_grad_(False)
    x, grad = torch.randn(2, batch, 40, 16, dtype=torch.float64).unbind(0)
    expected_out, expected_dx, expected = autograd_result(g, x, grad)
    by_hand = PreNormFeedForward(g)
    assert by_hand.can_run_by_hand(x)
    out, d_x, grads = by_hand.backward_by_hand(x, grad, rng=RngState(x.device), workspace=None, chunks=chunks)
    # bit for bit with the forward pass over the same chunks (engine._add_g cuts them as g_bounds does): the
    # reversible backward subtracts this output to rebuild its input. Against the unchunked module only to
    # rounding: a BLAS may round a 14-row product differently from a 40-row one (MKL on AMD EPYC does).
    bounds = chunks or [0, x.shape[1]]
    forward = torch.cat([by_hand.forward_by_hand(x[:, a:b]) for a, b in zip(bounds, bounds[1:])], dim=1)
    assert torch.equal(out, forward) and torch.equal(by_hand.forward_by_hand(x), expected_out)
    torch.testing.assert_close(out, expected_out, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d_x, expected_dx, rtol=1e-12, atol=1e-12)
    for p, d in zip(g.parameters(), grads):
        if p.requires_grad:
            torch.testing.assert_close(d, expected[id(p)], rtol=1e-12, atol=1e-12)
        else:
            assert d is None


def test_only_what_the_hand_path_covers_is_differentiated_by_hand():
    x = torch.randn(1, 8, 16)
    g = PreNorm(16, FeedForward(16, dropout=0.1)).train()
    assert not PreNormFeedForward(g).can_run_by_hand(x)  # a dropout mask: autograd replays it
    assert PreNormFeedForward(g.eval()).can_run_by_hand(x)
    assert PreNormFeedForward(PreNorm(16, FeedForward(16)).train()).can_run_by_hand(x)
    assert not PreNormFeedForward(PreNorm(16, FeedForward(16))).can_run_by_hand(x.bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not PreNormFeedForward(PreNorm(16, FeedForward(16))).can_run_by_hand(x)
    plain_norm = PreNorm(16, FeedForward(16))
    plain_norm.norm = torch.nn.LayerNorm(16, elementwise_affine=False)  # no weight or bias to add into
    assert not PreNormFeedForward(plain_norm).can_run_by_hand(x)
    unbiased = PreNorm(16, FeedForward(16))
    unbiased.fn.contract.bias = None
    assert not PreNormFeedForward(unbiased).can_run_by_hand(x)


def test_feed_forward_parts_by_name_are_its_layers_and_keep_the_checkpoint_keys():
    ff = FeedForward(8, mult=2, dropout=0.25).eval()
    assert (ff.expand.in_features, ff.expand.out_features, ff.contract.out_features) == (8, 16, 8)
    assert isinstance(ff.activation, torch.nn.GELU) and ff.drop.p == 0.25
    assert sorted(ff.state_dict()) == ["net.0.bias", "net.0.weight", "net.3.bias", "net.3.weight"]
    x = torch.randn(3, 8)
    assert torch.equal(ff(x), ff.net(x))
