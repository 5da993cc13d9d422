"""FastEngine: the reversible stack of model/reversible.py, computed with what can be run by hand.

The same function as the plain Engine (tests/model/fast compare them), for CPU memory and speed
at long lengths:
- branches with a ByHand adapter (adapter(): pre-norm LSH attention and feed-forward) run their
  forward pass and backward recompute by hand, all in one Workspace for the pass, forward and
  backward, so each [T, width] buffer is mapped (page-faulted in) once a step;
- the last KEPT_BLOCKS LSH blocks keep their forward attention state for backward, which then
  neither hashes nor attends again for them;
- every stream-sized tensor (T * d_model) is written into a buffer the pass owns (_combine), each
  old one dropped as soon as it is replaced, and every block's parameter gradients go into one
  buffer made up front, so that they do not pin holes between the transient tensors below them;
- g's output is added into the stream chunk by chunk: no whole-sequence g(y1) is held.
Other branches run as the plain engine runs them (recompute under autograd).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..feedforward import FeedForward
from ..lsh import LSHSelfAttention
from ..prenorm import PreNorm
from ..reversible import (AutocastState, Engine, ReversibleBlock, RngState, block_param_grads, recompute,
                          recompute_chunks)
from .by_hand import ByHand
from .feedforward import PreNormFeedForward
from .lsh import PreNormLSH
from .workspace import Workspace

# The last LSH blocks run by hand whose forward state (sort order, output, log-sum-exp: about T * d_model
# values each) is kept for backward: backward starts with them, so it neither hashes nor attends again for
# them.  A fixed count, so that memory stays flat in depth (measured in docs/benchmarks.md).
KEPT_BLOCKS = 2


def adapter(branch: nn.Module) -> ByHand | None:
    """The ByHand adapter of a block branch, by its type: a pre-norm LSH attention or feed-forward; None
    for any other branch (it runs as the plain engine runs it)."""
    if isinstance(branch, PreNorm):
        if isinstance(branch.fn, LSHSelfAttention):
            return PreNormLSH(branch)
        if isinstance(branch.fn, FeedForward):
            return PreNormFeedForward(branch)
    return None


class FastEngine(Engine):
    """The plain Engine's function, running branches by hand through their ByHand adapters."""

    def forward(self, blocks: nn.ModuleList, x1: Tensor, x2: Tensor, f_kwargs: dict) -> tuple[Tensor, Tensor]:
        for block in blocks:
            f, g = adapter(block.f), adapter(block.g)
            fx2 = block.f(x2, **f_kwargs) if f is None else f.forward_by_hand(x2, **f_kwargs)
            x1 = _combine(fx2, x1, also_not=x2)
            x2 = _add_g(block, g, x1, x2)
        return x1, x2

    def reversible(self, blocks: nn.ModuleList, x1: Tensor, x2: Tensor, f_kwargs: dict) -> tuple[Tensor, Tensor]:
        params = [p for block in blocks for p in block.parameters()]
        return _FastReversibleFunction.apply(x1, x2, blocks, f_kwargs, *params)


class _FastReversibleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x1, x2, blocks, f_kwargs, *params):
        device = x1.device
        ctx.autocast, ctx.rng, ctx.kept = AutocastState(device), [], {}
        ctx.adapters = [(adapter(block.f), adapter(block.g)) for block in blocks]
        ctx.workspace = Workspace(device)
        by_hand = [i for i, (f, _) in enumerate(ctx.adapters) if f is not None and f.can_run_by_hand(x2)]
        for i in by_hand[-KEPT_BLOCKS:]:  # backward starts with these: keep what it would redo
            ctx.kept[i] = []
        for i, block in enumerate(blocks):  # autograd.Function.forward already runs without grad
            f, g = ctx.adapters[i]
            f_rng = RngState(device)
            if f is None:
                fx2 = block.f(x2, **f_kwargs)
            elif i in by_hand:
                fx2 = f.forward_by_hand(x2, workspace=ctx.workspace, keep=ctx.kept.get(i), **f_kwargs)
            else:
                fx2 = f.forward_by_hand(x2, **f_kwargs)
            x1 = _combine(fx2, x1, also_not=x2)
            g_rng = RngState(device)
            x2 = _add_g(block, g, x1, x2)
            ctx.rng.append((f_rng, g_rng))
        ctx.blocks, ctx.f_kwargs = blocks, f_kwargs
        # kept as detached attributes, not saved tensors, so backward can drop them as soon as the last
        # block's inputs are rebuilt: save_for_backward would pin both until backward returns
        ctx.outputs = [x1.detach(), x2.detach()]
        return x1, x2

    @staticmethod
    def backward(ctx, dy1, dy2):
        y1, y2 = ctx.outputs
        ctx.outputs = None
        param_grads = _gradient_buffers([p for block in ctx.blocks for p in block.parameters()])
        end = len(param_grads)
        with ctx.autocast.replay():
            for i in reversed(range(len(ctx.blocks))):
                block, (f_rng, g_rng), (f, g) = ctx.blocks[i], ctx.rng[i], ctx.adapters[i]
                f_params, g_params = list(block.f.parameters()), list(block.g.parameters())
                bounds = block.g_bounds(y1)
                if g is not None and g.can_run_by_hand(y1):
                    gy1, dy1_g, g_grads = g.backward_by_hand(y1, dy2, rng=g_rng, workspace=ctx.workspace, chunks=bounds)
                else:
                    gy1, dy1_g, g_grads = recompute_chunks(block.g, y1, dy2, g_params, g_rng, bounds)
                dy1 = _combine(dy1_g, dy1)
                x2 = _combine(gy1, y2, subtract_from=True)
                del y2, gy1, dy1_g  # free before f's recompute: the peak of the whole backward is there
                if f is not None and f.can_run_by_hand(x2):
                    fx2, dx2_f, f_grads = f.backward_by_hand(x2, dy1, rng=f_rng, workspace=ctx.workspace,
                                                             kept=ctx.kept.pop(i, None), **ctx.f_kwargs)
                else:
                    fx2, dx2_f, f_grads = recompute(block.f, x2, dy1, f_params, f_rng, **ctx.f_kwargs)
                y1 = _combine(fx2, y1, subtract_from=True)
                y2 = x2.detach()
                dy2 = _combine(dx2_f, dy2)
                del x2, fx2, dx2_f
                start = end - len(list(block.parameters()))
                grads = block_param_grads(block, f_params, f_grads, g_params, g_grads)
                for j, grad in enumerate(grads, start):
                    param_grads[j] = None if grad is None else param_grads[j].copy_(grad)
                end = start
                del grads, f_grads, g_grads
        ctx.workspace = ctx.adapters = None
        return (dy1, dy2, None, None, *param_grads)


def _add_g(block: ReversibleBlock, g: ByHand | None, y1: Tensor, x2: Tensor) -> Tensor:
    """x2 + g(y1) without grad, each chunk's g added straight into the result (no whole-sequence g(y1) is held)."""
    run = block.g if g is None else g.forward_by_hand
    y2 = None
    bounds = block.g_bounds(y1)
    for a, b in zip(bounds, bounds[1:]):
        part = run(y1[:, a:b])
        if y2 is None:
            y2 = torch.empty_like(x2, dtype=torch.result_type(x2, part))
        torch.add(x2[:, a:b], part, out=y2[:, a:b])
    return y2  # g_bounds gives at least one chunk, (0, 0) for an empty sequence


def _combine(fresh: Tensor, other: Tensor, *, subtract_from: bool = False, also_not: Tensor | None = None) -> Tensor:
    """other - fresh if subtract_from else fresh + other, written into fresh (a tensor just made) when it
    can hold the result: same shape and dtype, and aliasing neither other nor also_not (a tensor still needed)."""
    storage = fresh.untyped_storage().data_ptr()
    in_place = (fresh.shape == other.shape and fresh.dtype == torch.result_type(fresh, other)
                and storage != other.untyped_storage().data_ptr()
                and (also_not is None or storage != also_not.untyped_storage().data_ptr()))
    if subtract_from:
        return torch.sub(other, fresh, out=fresh) if in_place else other - fresh
    return fresh.add_(other) if in_place else fresh + other


def _gradient_buffers(params: list[nn.Parameter]) -> list[Tensor | None]:
    """One tensor per entry of params (None where no grad is needed): views of one flat buffer per
    dtype and device, each entry its own slice (a parameter shared by two blocks gets two)."""
    needed: dict[tuple, list[int]] = {}
    for i, p in enumerate(params):
        if p.requires_grad:
            needed.setdefault((p.dtype, p.device), []).append(i)
    views: list[Tensor | None] = [None] * len(params)
    for (dtype, device), indices in needed.items():
        flat = torch.empty(sum(params[i].numel() for i in indices), dtype=dtype, device=device)
        offset = 0
        for i in indices:
            views[i] = flat[offset:offset + params[i].numel()].view_as(params[i])
            offset += params[i].numel()
    return views
