"""The pre-norm feed-forward differentiated by hand (the g branch of every Reformer block).

Autograd's recompute of a feed-forward chunk makes (and page-faults in) about five hidden-sized
tensors, [rows, ff_mult * d_model] each, and a gradient tensor per parameter to add up; by hand,
two hidden buffers serve every chunk of a block and gradients add straight into their totals.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..feedforward import FeedForward
from ..prenorm import PreNorm
from ..reversible import RngState
from .by_hand import BranchGrads, ByHand
from .workspace import Workspace


class PreNormFeedForward(ByHand):
    """ByHand for PreNorm(d, FeedForward): backward by pre_norm_backward, chunk by chunk."""

    def __init__(self, branch: PreNorm):
        super().__init__(branch)
        self.norm: nn.LayerNorm = branch.norm
        self.ff: FeedForward = branch.fn

    def can_run_by_hand(self, x: Tensor) -> bool:
        """float32 or float64 without autocast, no dropout mask to replay, and an affine LayerNorm and biased
        linears (their gradients have somewhere to go)."""
        norm, ff = self.norm, self.ff
        affine = len(norm.normalized_shape) == 1 and all(
            p is not None for p in (norm.weight, norm.bias, ff.expand.bias, ff.contract.bias))
        return (affine and x.dtype in (torch.float32, torch.float64) and not torch.is_autocast_enabled(x.device.type)
                and not (ff.training and ff.drop.p))

    def backward_by_hand(self, x: Tensor, grad: Tensor, *, rng: RngState | None = None,
                         workspace: Workspace | None = None, kept: list | None = None,
                         chunks: list[int] | None = None) -> BranchGrads:
        """Each chunk's rows through pre_norm_backward, written straight into the results when they are one
        sequence's (contiguous rows), the two hidden buffers shared by all chunks.  Needs no RNG (no live
        dropout), no workspace and nothing kept."""
        B, T, d = x.shape
        bounds = [0, T] if chunks is None else chunks
        out, d_x = torch.empty_like(x), torch.empty_like(x)
        params = list(self.branch.parameters())
        totals = {id(p): torch.zeros_like(p) for p in params}
        rows = B * (bounds[1] - bounds[0])  # the first chunk is the largest
        hidden = [torch.empty(rows, self.ff.expand.out_features, dtype=x.dtype, device=x.device) for _ in range(2)]
        for start, stop in zip(bounds, bounds[1:]):
            n = B * (stop - start)
            chunk_hidden = (hidden[0][:n], hidden[1][:n])
            if B == 1:
                pre_norm_backward(self.norm, self.ff, x[0, start:stop], grad[0, start:stop], out[0, start:stop],
                                  d_x[0, start:stop], totals, chunk_hidden)
                continue
            rows_x, rows_grad = (t[:, start:stop].reshape(n, d) for t in (x, grad))
            rows_out, rows_d_x = torch.empty_like(rows_x), torch.empty_like(rows_x)
            pre_norm_backward(self.norm, self.ff, rows_x, rows_grad, rows_out, rows_d_x, totals, chunk_hidden)
            out[:, start:stop], d_x[:, start:stop] = rows_out.view(B, -1, d), rows_d_x.view(B, -1, d)
        return out, d_x, [totals[id(p)] if p.requires_grad else None for p in params]


@torch.no_grad()
def pre_norm_backward(norm: nn.LayerNorm, ff: FeedForward, x: Tensor, grad: Tensor, out: Tensor, d_x: Tensor,
                      totals: dict[int, Tensor], hidden: tuple[Tensor, Tensor]) -> None:
    """ff(norm(x)) for rows x [n, d_model] and its gradient, by hand: writes the output into out and the
    gradient of <output, grad> with respect to x into d_x (both [n, d_model]), and adds each parameter's
    gradient into totals[id(parameter)].

    hidden: two [n, ff_mult * d_model] buffers, reused chunk after chunk.  The forward arithmetic is
    the modules' own (addmm, gelu), so out equals ff(norm(x)) bit for bit.
    """
    first, second, approximate = ff.expand, ff.contract, ff.activation.approximate
    pre, act = hidden
    normed, mean, rstd = torch.native_layer_norm(x, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    torch.addmm(first.bias, normed, first.weight.t(), out=pre)
    torch.ops.aten.gelu.out(pre, approximate=approximate, out=act)
    torch.addmm(second.bias, act, second.weight.t(), out=out)
    _add_linear_grads(totals, second, grad, act)
    d_act = torch.mm(grad, second.weight, out=act)  # act is spent once its weight gradient is taken
    d_pre = torch.ops.aten.gelu_backward.grad_input(d_act, pre, approximate=approximate, grad_input=pre)
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
