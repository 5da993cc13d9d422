"""Reversible residual stack (RevNet coupling, as in reformer-pytorch and HF's Reformer).

    y1 = x1 + f(x2)        x2 = y2 - g(y1)
    y2 = x2 + g(y1)        x1 = y1 - f(x2)

The forward pass keeps only the last block's outputs; backward rebuilds each block's inputs
from its outputs and recomputes f and g with grad on, one block at a time, so activation
memory does not grow with depth.  Recomputation must see the same randomness (dropout, LSH
hash seeds drawn from the global RNG) and the same autocast state as the forward pass, so
both are recorded per f and g and replayed.  `reversible=False` runs the same blocks as a
plain residual stack under ordinary autograd: the same function, for tests and comparisons.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .feedforward import differentiable_by_hand, pre_norm_backward
from .workspace import Workspace


class RngState:
    """The global CPU generator state and, for CUDA tensors, that device's generator state."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cpu = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    @contextmanager
    def replay(self) -> Iterator[None]:
        devices = [self.device] if self.cuda is not None else []
        with torch.random.fork_rng(devices=devices):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


class ReversibleBlock(nn.Module):
    """One coupling: f sees the second stream (plus keyword arguments such as mask), g the first.

    g must be position-wise (a pre-norm feed-forward): it runs over sequence chunks, in the
    forward pass and in the backward recompute alike, so its wide hidden activations never exist
    for the whole sequence at once.  Chunks: at least `g_chunks`, and enough that none holds more
    than G_CHUNK_TOKENS tokens (over the batch), so a million-token window is chunked without
    being told to.
    """

    def __init__(self, f: nn.Module, g: nn.Module, *, g_chunks: int = 1):
        super().__init__()
        if g_chunks < 1:
            raise ValueError(f"g_chunks must be >= 1, got {g_chunks}")
        self.f, self.g, self.g_chunks = f, g, g_chunks

    def forward(self, x1: Tensor, x2: Tensor, **f_kwargs) -> tuple[Tensor, Tensor]:
        y1 = x1 + self.f(x2, **f_kwargs)
        return y1, x2 + self.run_g(y1)

    def g_bounds(self, y1: Tensor) -> list[int]:
        """Sequence positions where g's chunks of y1 [B, T, d] start, and T at the end."""
        B, T = y1.shape[:2]
        chunks = min(max(self.g_chunks, -(-B * T // G_CHUNK_TOKENS)), max(T, 1))
        size = -(-T // chunks)
        return list(range(0, T, size)) + [T] if T else [0, 0]

    def run_g(self, y1: Tensor) -> Tensor:
        bounds = self.g_bounds(y1)
        if len(bounds) <= 2:
            return self.g(y1)
        return torch.cat([self.g(y1[:, a:b]) for a, b in zip(bounds, bounds[1:])], dim=1)

    @torch.no_grad()
    def add_g(self, y1: Tensor, x2: Tensor) -> Tensor:
        """x2 + g(y1), each chunk's g added straight into the result (no whole-sequence g(y1) is held)."""
        y2 = None
        bounds = self.g_bounds(y1)
        for a, b in zip(bounds, bounds[1:]):
            g = self.g(y1[:, a:b])
            if y2 is None:
                y2 = torch.empty_like(x2, dtype=torch.result_type(x2, g))
            torch.add(x2[:, a:b], g, out=y2[:, a:b])
        return y2  # g_bounds gives at least one chunk, (0, 0) for an empty sequence


G_CHUNK_TOKENS = 2048  # feed-forward hidden [2048, 4 * 256] float32 = 8 MiB at the default width


def _grads(outputs: Tensor, inputs: Tensor, params: list[nn.Parameter], grad_outputs: Tensor):
    """d(outputs)/d(inputs) and d/d(params) for those params that need grad (None for the others)."""
    trainable = [p for p in params if p.requires_grad]
    grads = torch.autograd.grad(outputs, (inputs, *trainable), grad_outputs, allow_unused=True)
    it = iter(grads[1:])
    return grads[0], [next(it) if p.requires_grad else None for p in params]


# The last by-hand attention blocks whose forward state (sort order, output, log-sum-exp: about T * d_model
# values each) is kept for backward, which then neither hashes nor attends again for them.  A fixed
# count, so memory stays flat in depth: at 65,536 tokens a 2-layer step ran ~4 % faster with two than
# with one, peak +9-20 MB (+44 MB at 24 layers; docs/benchmarks.md, run 14).
KEPT_BLOCKS = 2


class _ReversibleFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x1, x2, blocks, f_kwargs, *params):
        device = x1.device
        ctx.autocast = (device.type, torch.is_autocast_enabled(device.type), torch.get_autocast_dtype(device.type))
        ctx.rng = []
        ctx.kept = {}
        # one Workspace for every by-hand attention of the pass, forward and backward: their [T, width]
        # buffers have the same shapes block after block, so each is mapped (page-faulted in) once a step
        ctx.workspace = Workspace(device)
        by_hand = [i for i, block in enumerate(blocks) if _attends_by_hand(block.f, x2)]
        for i in by_hand[-KEPT_BLOCKS:]:  # backward starts with these: keep what it would redo
            ctx.kept[i] = []
        for i, block in enumerate(blocks):  # autograd.Function.forward already runs without grad
            f_rng = RngState(device)
            if i in by_hand:
                fx2 = block.f(x2, keep=ctx.kept.get(i), workspace=ctx.workspace, **f_kwargs)
            else:
                fx2 = block.f(x2, **f_kwargs)
            x1 = _combine(fx2, x1, also_not=x2)
            g_rng = RngState(device)
            x2 = block.add_g(x1, x2)
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
        device_type, enabled, dtype = ctx.autocast
        # every block's parameter gradients live until backward returns: gather them in one buffer made
        # up front, so that they do not pin holes between the transient tensors of the blocks below
        param_grads = _gradient_buffers([p for block in ctx.blocks for p in block.parameters()])
        end = len(param_grads)
        # Every stream-sized tensor here costs T * d_model: each block's new streams and gradients
        # are written into buffers this function owns, and old ones are dropped as soon as replaced.
        with torch.autocast(device_type, dtype=dtype, enabled=enabled):
            for i in reversed(range(len(ctx.blocks))):
                block, (f_rng, g_rng) = ctx.blocks[i], ctx.rng[i]
                f_params, g_params = list(block.f.parameters()), list(block.g.parameters())
                gy1, dy1_g, g_grads = _recompute_g(block, y1, dy2, g_params, g_rng)
                dy1 = _combine(dy1_g, dy1)
                x2 = _combine(gy1, y2, subtract_from=True)
                del y2, gy1, dy1_g  # free before f's recompute: the peak of the whole backward is there
                groups = _head_groups(block.f, x2)
                if groups is None:
                    with torch.enable_grad():
                        x2.requires_grad_()
                        with f_rng.replay():
                            fx2 = block.f(x2, **ctx.f_kwargs)
                        dx2_f, f_grads = _grads(fx2, x2, f_params, dy1)
                    fx2 = fx2.detach()
                else:
                    fx2, dx2_f, f_grads = _recompute_f_by_heads(block.f, x2, dy1, f_params, f_rng, groups, ctx.f_kwargs,
                                                                ctx.workspace, ctx.kept.pop(i, None))
                y1 = _combine(fx2, y1, subtract_from=True)
                y2 = x2.detach()
                dy2 = _combine(dx2_f, dy2)
                del x2, fx2, dx2_f
                start = end - len(list(block.parameters()))
                grads = _block_param_grads(block, f_params, f_grads, g_params, g_grads)
                for i, grad in enumerate(grads, start):
                    param_grads[i] = None if grad is None else param_grads[i].copy_(grad)
                end = start
                del grads, f_grads, g_grads
        ctx.workspace = None
        return (dy1, dy2, None, None, *param_grads)


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


def _recompute_g(block: ReversibleBlock, y1: Tensor, dy2: Tensor, params: list[nn.Parameter], rng: RngState):
    """g(y1), d/dy1 and d/dparams of <g(y1), dy2>, chunk by chunk in the forward pass's order and RNG stream.
    A pre-norm FeedForward is differentiated by hand (pre_norm_backward) where it can be, else by autograd."""
    gy1, dy1 = torch.empty_like(y1), torch.empty_like(y1)
    bounds = block.g_bounds(y1)
    if differentiable_by_hand(block.g, y1):
        return gy1, dy1, _recompute_g_by_hand(block.g, y1, dy2, gy1, dy1, params, bounds)
    totals: list[Tensor | None] = [None] * len(params)
    with rng.replay():
        for start, stop in zip(bounds, bounds[1:]):
            with torch.enable_grad():
                y1_c = y1[:, start:stop].detach().requires_grad_()
                out = block.g(y1_c)
                dy1[:, start:stop], grads = _grads(out, y1_c, params, dy2[:, start:stop])
            gy1[:, start:stop] = out.detach()
            totals = _accumulate(totals, grads)
    return gy1, dy1, totals


def _recompute_g_by_hand(g: nn.Module, y1: Tensor, dy2: Tensor, gy1: Tensor, dy1: Tensor,
                         params: list[nn.Parameter], bounds: list[int]) -> list[Tensor | None]:
    """_recompute_g for a pre-norm FeedForward: each chunk's rows through pre_norm_backward, written straight
    into gy1 and dy1 when they are one sequence's (contiguous rows), and the hidden buffers shared by all."""
    B, _, d = y1.shape
    totals = {id(p): torch.zeros_like(p) for p in params}
    rows = B * (bounds[1] - bounds[0])  # the first chunk is the largest
    hidden = [torch.empty(rows, g.fn.net[0].out_features, dtype=y1.dtype, device=y1.device) for _ in range(2)]
    for start, stop in zip(bounds, bounds[1:]):
        n = B * (stop - start)
        chunk_hidden = (hidden[0][:n], hidden[1][:n])
        if B == 1:
            pre_norm_backward(g, y1[0, start:stop], dy2[0, start:stop], gy1[0, start:stop], dy1[0, start:stop],
                              totals, chunk_hidden)
            continue
        x, grad = (t[:, start:stop].reshape(n, d) for t in (y1, dy2))
        out, d_x = torch.empty_like(x), torch.empty_like(x)
        pre_norm_backward(g, x, grad, out, d_x, totals, chunk_hidden)
        gy1[:, start:stop], dy1[:, start:stop] = out.view(B, -1, d), d_x.view(B, -1, d)
    return [totals[id(p)] if p.requires_grad else None for p in params]


def _accumulate(totals: list[Tensor | None], grads: list[Tensor | None]) -> list[Tensor | None]:
    """Elementwise totals + grads over two gradient lists, adding in place: each total is a tensor
    autograd made for this backward, so nothing else holds it."""
    return [a if b is None else b if a is None else a.add_(b) for a, b in zip(totals, grads)]


def _head_groups(f: nn.Module, x: Tensor) -> list[slice] | None:
    """Head groups of a pre-norm attention f whose heads can be recomputed apart (see LSHSelfAttention)."""
    fn = getattr(f, "fn", None)
    groups = getattr(fn, "head_groups", None)
    return None if groups is None or not hasattr(f, "norm") else groups(x.shape[0], x.shape[1])


def _by_hand(fn: nn.Module, x: Tensor) -> bool:
    """Whether the attention fn differentiates itself by hand on x (attend_backward) in _recompute_f_by_heads."""
    return hasattr(fn, "attend_backward") and fn.can_attend_backward(x)


def _attends_by_hand(f: nn.Module, x: Tensor) -> bool:
    """Whether the reversible pass runs f's attention by hand on x, by head groups (_recompute_f_by_heads):
    its forward pass then takes the pass's workspace and can keep its state (LSHSelfAttention's keep)."""
    return _head_groups(f, x) is not None and _by_hand(f.fn, x)


def _recompute_f_by_heads(f: nn.Module, x2: Tensor, dy1: Tensor, params: list[nn.Parameter], rng: RngState,
                          groups: list[slice], f_kwargs: dict, workspace: Workspace, kept: list | None = None):
    """f(x2) = to_out(attention of norm(x2)): recompute and differentiate the attention one head group
    at a time, so only one group's projections and attention state exist at once.  The output
    projection is applied by column blocks too: each group's share of f(x2) is added in, and its
    output gradient and weight-gradient columns come from that group alone, so neither the whole
    attention output nor its gradient is ever held.  Each group replays the forward pass's RNG
    state, so it draws the same hash seed the whole layer drew.

    Where the attention can differentiate itself by hand (attend_backward), it does, in `workspace` (the
    reversible pass's): every group's [T, width] intermediates then reuse one set of buffers.
    kept: the groups' attention state from the forward pass (for the last KEPT_BLOCKS by-hand blocks), each
    dropped once used; the forward pass's order and output then stand in for the recomputed ones, which
    differ from them only by the reconstruction's rounding."""
    fn = f.fn
    with torch.enable_grad():
        x2 = x2.detach().requires_grad_()
        normed = f.norm(x2)
    inner = normed.detach().requires_grad_()
    weight, bias = fn.to_out.weight, fn.to_out.bias
    flat_dy1 = dy1.reshape(-1, dy1.shape[-1])
    fx2 = None
    d_weight = torch.empty_like(weight)
    inner_params = [p for name, p in fn.named_parameters() if not name.startswith("to_out.")]
    by_hand = _by_hand(fn, inner)
    if by_hand:
        totals: list[Tensor | None] = [torch.zeros_like(p) for p in inner_params]
        total_of = {id(p): total for p, total in zip(inner_params, totals)}
    else:
        totals = [None] * len(inner_params)
    d_inner = None
    for i, group in enumerate(groups):
        columns = slice(group.start * fn.dim_head, group.stop * fn.dim_head)
        share = weight[:, columns].t()  # the output projection's rows for this group's columns
        if by_hand:
            grad = torch.mm(flat_dy1, share.detach().t(),
                            out=workspace.get("output_grad", (flat_dy1.shape[0], share.shape[0]), flat_dy1.dtype))
            group_kept = None
            if kept is not None:
                group_kept, kept[i] = kept[i], None
            with rng.replay():
                out, d_inner, row_grads = fn.attend_backward(inner.detach(), grad.view(*dy1.shape[:-1], -1), d_inner,
                                                             workspace, heads=group, kept=group_kept, **f_kwargs)
            del group_kept
            for param, rows, grad_rows in row_grads:
                total_of[id(param)][rows] = grad_rows
        else:
            with torch.enable_grad(), rng.replay():
                out = fn.attend(inner, heads=group, **f_kwargs)
                d_share, grads = _grads(out, inner, inner_params, F.linear(dy1, share))
            d_inner = d_share if d_inner is None else d_inner.add_(d_share)
            totals = _accumulate(totals, grads)
            del d_share, grads
        # in the weights' dtype whatever the autocast state: groups add their shares into one fx2 and d_weight
        flat_out = out.detach().reshape(-1, out.shape[-1]).to(weight.dtype)
        with torch.autocast(inner.device.type, enabled=False):
            fx2 = torch.addmm(bias, flat_out, share) if fx2 is None else fx2.addmm_(flat_out, share)
            torch.mm(flat_dy1.t().to(weight.dtype), flat_out, out=d_weight[:, columns])
        del out, flat_out
    out_grads = {id(weight): d_weight, id(bias): flat_dy1.sum(0)}
    norm_params = list(f.norm.parameters())
    dx2, norm_grads = _grads(normed, x2, norm_params, d_inner)
    by_param = {id(p): g for p, g in zip(inner_params + norm_params, totals + norm_grads)}
    by_param.update(out_grads)
    return fx2.view_as(dy1), dx2, [by_param.get(id(p)) if p.requires_grad else None for p in params]


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


def _block_param_grads(block, f_params, f_grads, g_params, g_grads) -> list[Tensor | None]:
    """Gradients in the order of block.parameters(), summing where f and g share a parameter."""
    total: dict[int, Tensor | None] = {}
    for p, grad in zip(f_params + g_params, f_grads + g_grads):
        if grad is not None:
            prev = total.get(id(p))
            total[id(p)] = grad if prev is None else prev + grad
    return [total.get(id(p)) for p in block.parameters()]


class ReversibleSequence(nn.Module):
    """A stack of ReversibleBlocks mapping two streams (x1, x2) to (y1, y2)."""

    def __init__(self, blocks: list[ReversibleBlock]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x1: Tensor, x2: Tensor, *, reversible: bool = True, **f_kwargs) -> tuple[Tensor, Tensor]:
        params = [p for block in self.blocks for p in block.parameters()]
        needs_grad = torch.is_grad_enabled() and (
            x1.requires_grad or x2.requires_grad or any(p.requires_grad for p in params))
        if reversible and needs_grad:
            return _ReversibleFunction.apply(x1, x2, self.blocks, f_kwargs, *params)
        for block in self.blocks:
            x1, x2 = block(x1, x2, **f_kwargs)
        return x1, x2
