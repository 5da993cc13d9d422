"""The generic reversible stack gives the plain residual stack's outputs and gradients (same weights, same seeds).

FastEngine, which computes the same function by hand, is tested against it in fast/test_engine.py.
"""
from __future__ import annotations

import pytest
import torch
from stacks import KINDS, assert_same, inputs, relative_error, run, run_autocast, stack, without

from genoformer.model import Reformer, ReformerConfig
from genoformer.model import reversible
from genoformer.model.fast import FastEngine
from genoformer.model.reversible import Engine, ReversibleBlock, ReversibleSequence


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_float64_gradients_match_plain_residual(dropout):
    torch.manual_seed(0)
    seq = stack(KINDS + ["local"], dropout).double().train()
    x, mask = inputs()
    assert_same(run(seq, x, mask, reversible=False), run(seq, x, mask, reversible=True), tol=1e-6)


def test_feed_forward_chunks_change_memory_not_the_function():
    torch.manual_seed(0)
    one, three = stack(["local", "full"], 0.0, ff_chunks=1).double(), stack(["local", "full"], 0.0, ff_chunks=3).double()
    three.load_state_dict(one.state_dict())
    x, mask = inputs(T=50)  # 50 tokens: chunks of 17, 17, 16
    for rev in (False, True):
        assert_same(run(one, x, mask, rev), run(three, x, mask, rev), tol=1e-9)


def test_long_inputs_get_more_feed_forward_chunks_with_the_same_function(monkeypatch):
    torch.manual_seed(0)
    seq = stack(["local", "full"], 0.0, ff_chunks=1).double()
    x, mask = inputs(T=50)
    before = [run(seq, x, mask, rev) for rev in (False, True)]
    assert len(seq.blocks[0].g_bounds(x)) == 2  # one chunk at the default G_CHUNK_TOKENS
    monkeypatch.setattr(reversible, "G_CHUNK_TOKENS", 16)
    assert len(seq.blocks[0].g_bounds(x)) - 1 == -(-x.shape[0] * 50 // 16)
    for rev, expected in zip((False, True), before):
        assert_same(expected, run(seq, x, mask, rev), tol=1e-9)


def test_dropout_is_live_so_replay_is_tested():
    """With a different seed the plain stack differs: the equality above depends on replaying the RNG."""
    torch.manual_seed(0)
    seq = stack(["local", "full"], 0.2).double().train()
    x, mask = inputs()
    a, _ = run(seq, x, mask, reversible=False, seed=0)
    b, _ = run(seq, x, mask, reversible=False, seed=1)
    assert relative_error(a, b) > 1e-3


def test_lsh_hashing_randomness_is_replayed():
    torch.manual_seed(0)
    seq = stack(["lsh", "lsh"], 0.0).double().train()
    x, mask = inputs()
    plain = run(seq, x, mask, reversible=False)
    assert_same(plain, run(seq, x, mask, reversible=True), tol=1e-6)
    other, _ = run(seq, x, mask, reversible=False, seed=5)  # other hash seeds: other buckets
    assert relative_error(other, plain[0]) > 1e-3


def test_float32_tolerance():
    torch.manual_seed(0)
    seq = stack(KINDS, 0.1).train()
    x, mask = inputs(torch.float32)
    tol = 100 * torch.finfo(torch.float32).eps  # ~1e-5; measured ~5e-7 (reconstruction rounding)
    assert_same(run(seq, x, mask, reversible=False), run(seq, x, mask, reversible=True), tol=tol)


@pytest.mark.parametrize("kinds", [["local", "full"], ["lsh", "local"]])
def test_autocast_state_is_replayed_in_recompute(kinds):
    torch.manual_seed(0)
    seq = stack(kinds, 0.1 if "lsh" not in kinds else 0.0).train()
    x, mask = inputs(torch.float32)
    plain, rev = run_autocast(seq, x, mask, False), run_autocast(seq, x, mask, True)
    errors = [relative_error(r, p) for r, p in zip(rev, plain)]
    assert max(errors) <= 1e-2, max(errors)


class AutocastProbe(torch.nn.Module):
    """Records whether CPU autocast is on each time it runs (forward, then recompute in backward)."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(32, 32)
        self.seen: list[bool] = []

    def forward(self, x, **kwargs):
        self.seen.append(torch.is_autocast_enabled("cpu"))
        return self.linear(x)


@pytest.mark.parametrize("engine", [Engine(), FastEngine()], ids=["plain", "fast"])
@pytest.mark.parametrize("autocast", [False, True])
def test_recompute_runs_under_the_forward_autocast_state(engine, autocast):
    f, g = AutocastProbe(), AutocastProbe()
    seq = ReversibleSequence([ReversibleBlock(f, g)], engine=engine)
    x = torch.randn(1, 4, 32, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        y1, y2 = seq(x, x, reversible=True)
    (y1.float().sum() + y2.float().sum()).backward()
    assert f.seen == [autocast, autocast] and g.seen == [autocast, autocast]


def test_torch_autograd_grad_and_frozen_parameters():
    """Parameters are inputs of the autograd Function: autograd.grad works and frozen ones get no gradient."""
    torch.manual_seed(0)
    seq = stack(["local", "full"], 0.0).double()
    frozen = seq.blocks[0].f.fn.to_q.weight
    frozen.requires_grad_(False)
    x, mask = inputs()
    trainable = [p for p in seq.parameters() if p.requires_grad]

    def grads(rev):
        y1, y2 = seq(x, x, reversible=rev, mask=mask)
        return torch.autograd.grad((y1 * y2).sum(), trainable)

    for a, b in zip(grads(True), grads(False)):
        assert relative_error(a, b) <= 1e-6
    assert frozen.grad is None


def test_no_grad_runs_the_engines_forward_and_keeps_nothing():
    class Counting(Engine):
        calls = 0

        def forward(self, blocks, x1, x2, f_kwargs):
            Counting.calls += 1
            return super().forward(blocks, x1, x2, f_kwargs)

    seq = stack(["local", "full"], 0.0)
    seq.engine = Counting()
    x, mask = inputs(torch.float32)
    with torch.no_grad():
        y1, _ = seq(x, x, reversible=True, mask=mask)
    assert y1.grad_fn is None and Counting.calls == 1
    with torch.no_grad():
        one = seq.run_blocks(x, x, slice(0, 1), mask=mask)
        both = seq.run_blocks(*one, slice(1, 2), mask=mask)
    assert Counting.calls == 3 and torch.equal(both[0], y1)


def test_reformer_reversible_flag_changes_memory_not_the_function():
    config = dict(vocab_size=20, d_model=32, depth=3, heads=4, attention=KINDS, bucket_size=8, n_hashes=2,
                  window_size=8, hash_seed=3)
    torch.manual_seed(0)
    rev = Reformer(ReformerConfig(**config, reversible=True)).double()
    plain = Reformer(ReformerConfig(**config, reversible=False)).double()
    plain.load_state_dict(rev.state_dict())
    tokens = torch.randint(0, 20, (2, 37))
    outs = []
    for model in (rev, plain):
        y = model(tokens)
        (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum().backward()
        outs.append((y.detach(), [p.grad for p in model.parameters()]))
    assert_same(outs[1], outs[0], tol=1e-6)


def test_shared_and_frozen_parameters_get_the_plain_stacks_gradients():
    """A feed-forward tied across two blocks must get the sum of both blocks' shares, and a frozen parameter none."""
    torch.manual_seed(0)
    seq = stack(["local", "full"], 0.0).double()
    seq.blocks[1].g = seq.blocks[0].g  # tied: one module, two blocks
    seq.blocks[0].f.norm.weight.requires_grad_(False)
    x, mask = inputs()
    plain, rev = run(seq, x, mask, reversible=False), run(seq, x, mask, reversible=True)
    assert [g is None for g in plain[1]] == [g is None for g in rev[1]]
    frozen = [i for i, g in enumerate(rev[1]) if g is None]
    assert len(frozen) == 1  # the frozen norm weight
    assert_same(without(plain, frozen), without(rev, frozen), tol=1e-6)
