"""Helpers for the reversible-stack tests (here and in fast/): small stacks, a fixed loss, comparisons."""
from __future__ import annotations

import torch

from genoformer.model import ReformerConfig
from genoformer.model.feedforward import FeedForward
from genoformer.model.prenorm import PreNorm
from genoformer.model.reformer import make_attention
from genoformer.model.reversible import Engine, ReversibleBlock, ReversibleSequence

KINDS = ["local", "full", "lsh"]


def stack(kinds: list[str], dropout: float, d: int = 32, ff_chunks: int = 3,
          engine: Engine | None = None) -> ReversibleSequence:
    """Blocks of (pre-norm attention of each kind, pre-norm feed-forward), as the Reformer builds them."""
    config = ReformerConfig(vocab_size=8, d_model=d, depth=len(kinds), heads=4, attention=kinds,
                            bucket_size=8, n_hashes=2, window_size=8, dropout=dropout)
    return ReversibleSequence([
        ReversibleBlock(PreNorm(d, make_attention(kind, config)), PreNorm(d, FeedForward(d, dropout=dropout)),
                        g_chunks=ff_chunks)
        for kind in kinds
    ], engine=engine)


def run(seq: ReversibleSequence, x: torch.Tensor, mask, reversible: bool, seed: int = 0):
    """Outputs and gradients (input first, then every parameter) of a fixed random projection of both streams."""
    seq.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    torch.manual_seed(seed)
    y1, y2 = seq(x, x, reversible=reversible, mask=mask)
    assert ("ReversibleFunction" in type(y1.grad_fn).__name__) == reversible
    weights = torch.Generator().manual_seed(99)
    w1 = torch.randn(y1.shape, generator=weights, dtype=torch.float64).to(y1)  # y1's dtype and device
    w2 = torch.randn(y2.shape, generator=weights, dtype=torch.float64).to(y2)
    ((y1 * w1).sum() + (y2 * w2).sum()).backward()
    grads = [x.grad] + [p.grad for p in seq.parameters()]
    return torch.cat([y1, y2]).detach(), grads


def run_autocast(seq: ReversibleSequence, x: torch.Tensor, mask: torch.Tensor, reversible: bool):
    """Forward under bf16 autocast, backward outside it (the usual training loop): input and parameter gradients."""
    seq.zero_grad(set_to_none=True)
    xx = x.clone().requires_grad_()
    torch.manual_seed(0)
    with torch.autocast(x.device.type, dtype=torch.bfloat16):
        y1, y2 = seq(xx, xx, reversible=reversible, mask=mask)
    (y1.float().square().sum() + y2.float().sum()).backward()
    return [xx.grad] + [p.grad for p in seq.parameters()]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def assert_same(plain, rev, tol: float):
    (out_p, grads_p), (out_r, grads_r) = plain, rev
    assert relative_error(out_r, out_p) <= tol
    assert len(grads_p) == len(grads_r)
    for i, (gp, gr) in enumerate(zip(grads_p, grads_r)):
        assert gp is not None and gr is not None, f"gradient {i} missing"
        assert relative_error(gr, gp) <= tol, f"gradient {i}: relative error {relative_error(gr, gp):.2e}"


def without(result, frozen: list[int]):
    """A run's result without the gradients at positions `frozen` (parameters that get none)."""
    return result[0], [g for i, g in enumerate(result[1]) if i not in frozen]


def inputs(dtype=torch.float64, T: int = 48):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, T, 32, generator=g, dtype=torch.float64).to(dtype)
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[1, 40:] = False
    return x, mask
