"""Position-wise feed-forward: Linear -> GELU -> dropout -> Linear.

Its hidden activation is ff_mult times wider than the stream.  ReversibleBlock applies the
pre-norm feed-forward over `ff_chunks` sequence chunks, in the forward pass and in the backward
recompute alike, which caps that peak at 1/ff_chunks of the full [B, T, ff_mult * d_model]
(chunking inside this module would not: autograd would keep every chunk's activations).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


class FeedForward(nn.Module):
    def __init__(self, d_model: int, *, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d_model, mult * d_model),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(mult * d_model, d_model),
        )

    def forward(self, x: Tensor) -> Tensor:
        """x [B, T, d_model] -> [B, T, d_model]."""
        return self.net(x)


def differentiable_by_hand(g: nn.Module, x: Tensor) -> bool:
    """Whether g is a pre-norm FeedForward (g.norm an affine LayerNorm, g.fn a FeedForward) that
    pre_norm_backward can differentiate on x: float32 or float64 without autocast, and no dropout mask
    to replay."""
    norm, ff = getattr(g, "norm", None), getattr(g, "fn", None)
    if not (isinstance(norm, nn.LayerNorm) and isinstance(ff, FeedForward) and len(norm.normalized_shape) == 1):
        return False
    with_bias = all(p is not None for p in (norm.weight, norm.bias, ff.net[0].bias, ff.net[3].bias))
    return (with_bias and x.dtype in (torch.float32, torch.float64) and not torch.is_autocast_enabled(x.device.type)
            and not (ff.training and ff.net[2].p))


@torch.no_grad()
def pre_norm_backward(g: nn.Module, x: Tensor, grad: Tensor, out: Tensor, d_x: Tensor,
                      totals: dict[int, Tensor], hidden: tuple[Tensor, Tensor]) -> None:
    """g(x) = ff(norm(x)) for rows x [n, d_model] and its gradient, by hand: writes g(x) into out and the
    gradient of <g(x), grad> with respect to x into d_x (both [n, d_model]), and adds each parameter's
    gradient into totals[id(parameter)].

    hidden: two [n, ff_mult * d_model] buffers, reused chunk after chunk, where autograd would make (and
    page-fault in) about five hidden-sized tensors a chunk and a gradient tensor per parameter to add up.
    The forward arithmetic is the module's own (addmm, gelu), so out equals g(x) bit for bit.
    """
    norm, ff = g.norm, g.fn
    first, gelu, _, second = ff.net
    pre, act = hidden
    normed, mean, rstd = torch.native_layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    torch.addmm(first.bias, normed, first.weight.t(), out=pre)
    torch.ops.aten.gelu.out(pre, approximate=gelu.approximate, out=act)
    torch.addmm(second.bias, act, second.weight.t(), out=out)
    _add_linear_grads(totals, second, grad, act)
    d_act = torch.mm(grad, second.weight, out=act)  # act is spent once its weight gradient is taken
    d_pre = torch.ops.aten.gelu_backward.grad_input(d_act, pre, approximate=gelu.approximate, grad_input=pre)
    _add_linear_grads(totals, first, d_pre, normed)
    d_normed = torch.mm(d_pre, first.weight)
    d_in, d_weight, d_bias = torch.ops.aten.native_layer_norm_backward(
        d_normed, x, norm.normalized_shape, mean, rstd, norm.weight, norm.bias, [True, True, True])
    d_x.copy_(d_in)
    totals[id(norm.weight)].add_(d_weight)
    totals[id(norm.bias)].add_(d_bias)


def _add_linear_grads(totals: dict[int, Tensor], linear: nn.Linear, grad: Tensor, inputs: Tensor) -> None:
    totals[id(linear.weight)].addmm_(grad.t(), inputs)
    totals[id(linear.bias)].add_(grad.sum(0))
