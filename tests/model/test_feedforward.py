"""The pre-norm feed-forward differentiated by hand gives autograd's output and gradients."""
from __future__ import annotations

import pytest
import torch

from genoformer.model.feedforward import FeedForward, differentiable_by_hand, pre_norm_backward
from genoformer.model.reformer import PreNorm


def autograd_result(g: PreNorm, x: torch.Tensor, grad: torch.Tensor):
    x = x.detach().requires_grad_()
    out = g(x)
    params = list(g.parameters())
    grads = torch.autograd.grad(out, [x, *params], grad)
    return out.detach(), grads[0], {id(p): d for p, d in zip(params, grads[1:])}


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_pre_norm_backward_equals_autograd(dtype, tol):
    torch.manual_seed(0)
    g = PreNorm(16, FeedForward(16, mult=3)).to(dtype)
    with torch.no_grad():  # a LayerNorm that is not the identity, so its gradients are tested too
        g.norm.weight.uniform_(0.5, 1.5)
        g.norm.bias.uniform_(-0.5, 0.5)
    x, grad = torch.randn(2, 40, 16, dtype=dtype).unbind(0)
    expected_out, expected_dx, expected = autograd_result(g, x, grad)
    out, d_x = torch.empty_like(x), torch.empty_like(x)
    totals = {id(p): torch.zeros_like(p) for p in g.parameters()}
    hidden = (torch.empty(40, 48, dtype=dtype), torch.empty(40, 48, dtype=dtype))
    pre_norm_backward(g, x, grad, out, d_x, totals, hidden)
    # bit for bit: the reversible backward rebuilds its inputs by subtracting exactly this output
    assert torch.equal(out, expected_out)
    torch.testing.assert_close(d_x, expected_dx, rtol=tol, atol=tol)
    for p in g.parameters():
        torch.testing.assert_close(totals[id(p)], expected[id(p)], rtol=tol, atol=tol)
    pre_norm_backward(g, x, grad, out, d_x, totals, hidden)  # gradients add up over calls (chunks)
    for p in g.parameters():
        torch.testing.assert_close(totals[id(p)], 2 * expected[id(p)], rtol=tol, atol=tol)


def test_only_what_the_hand_path_covers_is_differentiated_by_hand():
    x = torch.randn(1, 8, 16)
    g = PreNorm(16, FeedForward(16, dropout=0.1)).train()
    assert not differentiable_by_hand(g, x)  # a dropout mask: autograd replays it
    assert differentiable_by_hand(g.eval(), x)
    assert differentiable_by_hand(PreNorm(16, FeedForward(16)).train(), x)
    assert not differentiable_by_hand(PreNorm(16, FeedForward(16)), x.bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not differentiable_by_hand(PreNorm(16, FeedForward(16)), x)
    assert not differentiable_by_hand(PreNorm(16, torch.nn.Linear(16, 16)), x)
    plain_norm = PreNorm(16, FeedForward(16))
    plain_norm.norm = torch.nn.LayerNorm(16, elementwise_affine=False)  # no weight or bias to add into
    assert not differentiable_by_hand(plain_norm, x)
