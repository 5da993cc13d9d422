"""Reversible residual stack (RevNet, Gomez et al. 2017, https://arxiv.org/abs/1707.04585; as the
Reformer uses it, and as reformer-pytorch's reversible.py and HF's Reformer write it).

    y1 = x1 + f(x2)        x2 = y2 - g(y1)
    y2 = x2 + g(y1)        x1 = y1 - f(x2)

The forward pass keeps only the last block's outputs; backward rebuilds each block's inputs
from its outputs and recomputes f and g with grad on, one block at a time, so activation
memory does not grow with depth.  Recomputation must see the same randomness (dropout, LSH
hash seeds drawn from the global RNG) and the same autocast state as the forward pass, so
both are recorded per f and g and replayed.  `reversible=False` runs the same blocks as a
plain residual stack under ordinary autograd: the same function, for tests and comparisons.

How the stack runs is its Engine's business: `Engine` here is this plain one;
genoformer.model.fast.FastEngine computes the same function with what it can run by hand.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import Tensor, nn

from .sizing import piece_size


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


class AutocastState:
    """Whether autocast was on for a device type, and its dtype, to run a recomputation under the same."""

    def __init__(self, device: torch.device):
        self.device_type = device.type
        self.enabled = torch.is_autocast_enabled(device.type)
        self.dtype = torch.get_autocast_dtype(device.type)

    def replay(self) -> torch.autocast:
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)


G_CHUNK_TOKENS = 2048  # feed-forward hidden [2048, 4 * 256] float32 = 8 MiB at the default width
LARGE_G_CHUNK_TOKENS = 2 ** 16  # on an accelerator (sizing.py): 256 MiB, 16 chunks for a 1 Mb window at k = 1


class ReversibleBlock(nn.Module):
    """One coupling: f sees the second stream (plus keyword arguments such as mask), g the first.

    g must be position-wise (a pre-norm feed-forward): it runs over sequence chunks, in the
    forward pass and in the backward recompute alike, so its wide hidden activations never exist
    for the whole sequence at once.  Chunks: at least `g_chunks`, and enough that none holds more
    than G_CHUNK_TOKENS tokens (over the batch; LARGE_G_CHUNK_TOKENS on an accelerator, sizing.py), so
    a million-token window is chunked without being told to.
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
        tokens = piece_size(y1.device, G_CHUNK_TOKENS, LARGE_G_CHUNK_TOKENS)
        chunks = min(max(self.g_chunks, -(-B * T // tokens)), max(T, 1))
        size = -(-T // chunks)
        return list(range(0, T, size)) + [T] if T else [0, 0]

    def run_g(self, y1: Tensor) -> Tensor:
        bounds = self.g_bounds(y1)
        if len(bounds) <= 2:
            return self.g(y1)
        return torch.cat([self.g(y1[:, a:b]) for a, b in zip(bounds, bounds[1:])], dim=1)

    def backward_pass(self, y1: Tensor, y2: Tensor, dy1: Tensor, dy2: Tensor, f_rng: RngState, g_rng: RngState,
                      **f_kwargs) -> tuple[Tensor, Tensor, Tensor, Tensor, list[Tensor | None]]:
        """From the outputs (y1, y2) and their gradients: the inputs (x1, x2), their gradients, and the
        gradients of block.parameters() (None where none is needed), recomputing g then f under autograd
        with the randomness their forward pass drew."""
        f_params, g_params = list(self.f.parameters()), list(self.g.parameters())
        gy1, dy1_g, g_grads = recompute_chunks(self.g, y1, dy2, g_params, g_rng, self.g_bounds(y1))
        x2, dx1 = y2 - gy1, dy1 + dy1_g
        fx2, dx2_f, f_grads = recompute(self.f, x2, dx1, f_params, f_rng, **f_kwargs)
        return y1 - fx2, x2, dx1, dy2 + dx2_f, block_param_grads(self, f_params, f_grads, g_params, g_grads)


def recompute(branch: nn.Module, x: Tensor, grad: Tensor, params: list[nn.Parameter], rng: RngState,
              **kwargs) -> tuple[Tensor, Tensor, list[Tensor | None]]:
    """branch(x, **kwargs) recomputed under autograd with the RNG state `rng`, the gradient of
    <branch(x), grad> with respect to x, and with respect to params (None where not required)."""
    with torch.enable_grad():
        x = x.detach().requires_grad_()
        with rng.replay():
            out = branch(x, **kwargs)
        d_x, grads = grads_of(out, x, params, grad)
    return out.detach(), d_x, grads


def recompute_chunks(branch: nn.Module, x: Tensor, grad: Tensor, params: list[nn.Parameter], rng: RngState,
                     bounds: list[int]) -> tuple[Tensor, Tensor, list[Tensor | None]]:
    """recompute for a position-wise branch, one sequence chunk of x [B, T, d] at a time (chunk i is
    x[:, bounds[i]:bounds[i + 1]]), in the forward pass's order and RNG stream: only one chunk's graph exists at once."""
    out, d_x = torch.empty_like(x), torch.empty_like(x)
    totals: list[Tensor | None] = [None] * len(params)
    with rng.replay():
        for start, stop in zip(bounds, bounds[1:]):
            with torch.enable_grad():
                chunk = x[:, start:stop].detach().requires_grad_()
                part = branch(chunk)
                d_x[:, start:stop], grads = grads_of(part, chunk, params, grad[:, start:stop])
            out[:, start:stop] = part.detach()
            totals = accumulate(totals, grads)
    return out, d_x, totals


def grads_of(outputs: Tensor, inputs: Tensor, params: list[nn.Parameter], grad_outputs: Tensor):
    """d(outputs)/d(inputs) and d/d(params) for those params that need grad (None for the others)."""
    trainable = [p for p in params if p.requires_grad]
    grads = torch.autograd.grad(outputs, (inputs, *trainable), grad_outputs, allow_unused=True)
    it = iter(grads[1:])
    return grads[0], [next(it) if p.requires_grad else None for p in params]


def accumulate(totals: list[Tensor | None], grads: list[Tensor | None]) -> list[Tensor | None]:
    """Elementwise totals + grads over two gradient lists, adding in place: each total is a tensor
    autograd made for this backward, so nothing else holds it."""
    return [a if b is None else b if a is None else a.add_(b) for a, b in zip(totals, grads)]


def block_param_grads(block: ReversibleBlock, f_params, f_grads, g_params, g_grads) -> list[Tensor | None]:
    """Gradients in the order of block.parameters(), summing where f and g share a parameter."""
    total: dict[int, Tensor | None] = {}
    for p, grad in zip(f_params + g_params, f_grads + g_grads):
        if grad is not None:
            prev = total.get(id(p))
            total[id(p)] = grad if prev is None else prev + grad
    return [total.get(id(p)) for p in block.parameters()]


class ReversibleFunction(torch.autograd.Function):
    """A stack of blocks as one autograd node whose only saved state is its outputs: backward rebuilds each
    block's inputs from its outputs, last block first (ReversibleBlock.backward_pass).  The parameters are
    inputs too, so their gradients come out of backward (torch.autograd.grad sees them)."""

    @staticmethod
    def forward(ctx, x1, x2, blocks, f_kwargs, *params):
        ctx.autocast, ctx.rng = AutocastState(x1.device), []
        for block in blocks:  # autograd.Function.forward runs without grad
            f_rng = RngState(x1.device)
            x1 = x1 + block.f(x2, **f_kwargs)
            g_rng = RngState(x1.device)
            x2 = x2 + block.run_g(x1)
            ctx.rng.append((f_rng, g_rng))
        ctx.blocks, ctx.f_kwargs = blocks, f_kwargs
        ctx.outputs = x1.detach(), x2.detach()
        return x1, x2

    @staticmethod
    def backward(ctx, dy1, dy2):
        (y1, y2), ctx.outputs = ctx.outputs, None
        param_grads: list[Tensor | None] = []
        with ctx.autocast.replay():
            for block, (f_rng, g_rng) in zip(reversed(ctx.blocks), reversed(ctx.rng)):
                y1, y2, dy1, dy2, grads = block.backward_pass(y1, y2, dy1, dy2, f_rng, g_rng, **ctx.f_kwargs)
                param_grads[:0] = grads
        return (dy1, dy2, None, None, *param_grads)


class Engine:
    """How a ReversibleSequence runs its blocks: this plain engine calls the modules as they are, and runs
    the reversible pass through ReversibleFunction.  genoformer.model.fast.FastEngine overrides both."""

    def forward(self, blocks: nn.ModuleList, x1: Tensor, x2: Tensor, f_kwargs: dict) -> tuple[Tensor, Tensor]:
        """The blocks with grad mode off: nothing is kept for backward."""
        for block in blocks:
            x1, x2 = block(x1, x2, **f_kwargs)
        return x1, x2

    def reversible(self, blocks: nn.ModuleList, x1: Tensor, x2: Tensor, f_kwargs: dict) -> tuple[Tensor, Tensor]:
        """The blocks under autograd, keeping only their outputs for backward."""
        params = [p for block in blocks for p in block.parameters()]
        return ReversibleFunction.apply(x1, x2, blocks, f_kwargs, *params)


class ReversibleSequence(nn.Module):
    """A stack of ReversibleBlocks mapping two streams (x1, x2) to (y1, y2), run by `engine` (default: Engine)."""

    def __init__(self, blocks: list[ReversibleBlock], engine: Engine | None = None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.engine = Engine() if engine is None else engine

    def forward(self, x1: Tensor, x2: Tensor, *, reversible: bool = True, **f_kwargs) -> tuple[Tensor, Tensor]:
        if not torch.is_grad_enabled():
            return self.engine.forward(self.blocks, x1, x2, f_kwargs)
        needs_grad = x1.requires_grad or x2.requires_grad or any(p.requires_grad for p in self.parameters())
        if reversible and needs_grad:
            return self.engine.reversible(self.blocks, x1, x2, f_kwargs)
        for block in self.blocks:  # a plain residual stack: autograd keeps every block's activations
            x1, x2 = block(x1, x2, **f_kwargs)
        return x1, x2

    @torch.no_grad()
    def run_blocks(self, x1: Tensor, x2: Tensor, blocks: slice, **f_kwargs) -> tuple[Tensor, Tensor]:
        """The blocks in `blocks` alone, as forward runs them with grad mode off (to step through the stack)."""
        return self.engine.forward(self.blocks[blocks], x1, x2, f_kwargs)
