"""The reversible stack gives the plain residual stack's outputs and gradients (same weights, same seeds)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from genoformer.model import ReformerConfig
from genoformer.model.feedforward import FeedForward
from genoformer.model.reformer import PreNorm, Reformer, make_attention
from genoformer.model.reversible import ReversibleBlock, ReversibleSequence

HAS_LSH = (Path(__file__).resolve().parents[2] / "genoformer" / "model" / "lsh.py").exists()
KINDS = ["local", "full"] + (["lsh"] if HAS_LSH else [])


def stack(kinds: list[str], dropout: float, d: int = 32, ff_chunks: int = 3) -> ReversibleSequence:
    config = ReformerConfig(vocab_size=8, d_model=d, depth=len(kinds), heads=4, attention=kinds,
                            bucket_size=8, n_hashes=2, window_size=8, dropout=dropout)
    return ReversibleSequence([
        ReversibleBlock(PreNorm(d, make_attention(kind, config)), PreNorm(d, FeedForward(d, dropout=dropout)),
                        g_chunks=ff_chunks)
        for kind in kinds
    ])


def run(seq: ReversibleSequence, x: torch.Tensor, mask, reversible: bool, seed: int = 0):
    """Outputs and gradients (input first, then every parameter) of a fixed random projection of both streams."""
    seq.zero_grad(set_to_none=True)
    x = x.detach().clone().requires_grad_()
    torch.manual_seed(seed)
    y1, y2 = seq(x, x, reversible=reversible, mask=mask)
    assert (type(y1.grad_fn).__name__ == "_ReversibleFunctionBackward") == reversible
    weights = torch.Generator().manual_seed(99)
    w1 = torch.randn(y1.shape, generator=weights, dtype=torch.float64).to(y1.dtype)
    w2 = torch.randn(y2.shape, generator=weights, dtype=torch.float64).to(y2.dtype)
    ((y1 * w1).sum() + (y2 * w2).sum()).backward()
    grads = [x.grad] + [p.grad for p in seq.parameters()]
    return torch.cat([y1, y2]).detach(), grads


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def assert_same(plain, rev, tol: float):
    (out_p, grads_p), (out_r, grads_r) = plain, rev
    assert relative_error(out_r, out_p) <= tol
    assert len(grads_p) == len(grads_r)
    for i, (gp, gr) in enumerate(zip(grads_p, grads_r)):
        assert gp is not None and gr is not None, f"gradient {i} missing"
        assert relative_error(gr, gp) <= tol, f"gradient {i}: relative error {relative_error(gr, gp):.2e}"


def inputs(dtype=torch.float64, T: int = 48):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, T, 32, generator=g, dtype=torch.float64).to(dtype)
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[1, 40:] = False
    return x, mask


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_float64_gradients_match_plain_residual(dropout):
    torch.manual_seed(0)
    seq = stack(KINDS + ["local"], dropout).double().train()
    x, mask = inputs()
    assert_same(run(seq, x, mask, reversible=False), run(seq, x, mask, reversible=True), tol=1e-6)


@pytest.mark.skipif(not HAS_LSH, reason="no LSH layer")
@pytest.mark.parametrize("by_hand", [True, False], ids=["attend_backward", "autograd"])
@pytest.mark.parametrize("group_rows", [1, 192, 2 ** 16])  # one head per group, two heads, all at once
def test_lsh_recomputed_a_head_group_at_a_time_matches_plain_residual(monkeypatch, group_rows, by_hand):
    from genoformer.model import lsh

    monkeypatch.setattr(lsh, "GROUP_ROWS", group_rows)
    if not by_hand:  # the path mixed precision takes
        monkeypatch.setattr(lsh.LSHSelfAttention, "can_attend_backward", lambda self, x: False)
    torch.manual_seed(0)
    seq = stack(["lsh", "local", "lsh"], 0.0).double().train()
    x, mask = inputs()
    attention = seq.blocks[0].f.fn
    expected = {1: 4, 192: 2, 2 ** 16: 1}[group_rows]
    groups = attention.head_groups(*x.shape[:2])
    assert len(groups) == expected
    assert_same(run(seq, x, mask, reversible=False), run(seq, x, mask, reversible=True), tol=1e-6)


@pytest.mark.skipif(not HAS_LSH, reason="no LSH layer")
@pytest.mark.parametrize("kept_blocks", [1, 2, 3])
@pytest.mark.parametrize("group_rows", [1, 2 ** 16])
def test_last_lsh_blocks_reuse_their_forward_attention_in_backward(monkeypatch, group_rows, kept_blocks):
    """The backward starts at the last blocks, whose forward pass keeps each head group's order, output
    and log-sum-exp (the last KEPT_BLOCKS LSH blocks, whatever other blocks lie between): their
    recompute neither hashes nor attends again, and the gradients stay exact."""
    from genoformer.model import lsh, reversible

    monkeypatch.setattr(lsh, "GROUP_ROWS", group_rows)
    monkeypatch.setattr(reversible, "KEPT_BLOCKS", kept_blocks)
    calls = {"forward": 0, "hash": 0}
    real_forward, real_hash = lsh.attention_forward, lsh.LSHSelfAttention._hash

    def counting_forward(*args, **kwargs):
        calls["forward"] += 1
        return real_forward(*args, **kwargs)

    def counting_hash(self, *args, **kwargs):
        calls["hash"] += 1
        return real_hash(self, *args, **kwargs)

    monkeypatch.setattr(lsh, "attention_forward", counting_forward)
    monkeypatch.setattr(lsh.LSHSelfAttention, "_hash", counting_hash)
    torch.manual_seed(0)
    seq = stack(["lsh", "lsh", "local", "lsh"], 0.0).double().train()
    x, mask = inputs()
    groups = len(seq.blocks[0].f.fn.head_groups(*x.shape[:2]))
    plain = run(seq, x, mask, reversible=False)
    calls.update(forward=0, hash=0)
    rev = run(seq, x, mask, reversible=True)
    # forward: the three LSH blocks, every group; backward: the groups of the LSH blocks not kept
    recomputed = 3 - min(kept_blocks, 3)
    assert calls == {"forward": (3 + recomputed) * groups, "hash": (3 + recomputed) * groups}
    assert_same(plain, rev, tol=1e-6)


@pytest.mark.skipif(not HAS_LSH, reason="no LSH layer")
def test_one_workspace_serves_every_lsh_block_forward_and_backward(monkeypatch):
    """A reversible pass hands every LSH block, in its forward pass and in the backward recompute, the
    same Workspace, so each [T, width] buffer is mapped once a step, not once per block and pass."""
    from genoformer.model import lsh

    monkeypatch.setattr(lsh, "GROUP_ROWS", 1)  # a head per group
    seen = []
    real_attend_in = lsh.LSHSelfAttention._attend_in

    def recording_attend_in(self, workspace, *args, **kwargs):
        seen.append(workspace)
        return real_attend_in(self, workspace, *args, **kwargs)

    monkeypatch.setattr(lsh.LSHSelfAttention, "_attend_in", recording_attend_in)
    torch.manual_seed(0)
    seq = stack(["lsh", "local", "lsh", "lsh"], 0.0).double().train()
    x, mask = inputs()
    plain = run(seq, x, mask, reversible=False)
    assert seen == []  # with autograd on, the plain stack attends through LSHAttentionFunction
    rev = run(seq, x, mask, reversible=True)
    groups = len(seq.blocks[0].f.fn.head_groups(*x.shape[:2]))
    assert len(seen) == 2 * 3 * groups  # three LSH blocks, forward and backward, each group
    assert len({id(w) for w in seen}) == 1
    assert_same(plain, rev, tol=1e-6)


def test_feed_forward_chunks_change_memory_not_the_function():
    torch.manual_seed(0)
    one, three = stack(["local", "full"], 0.0, ff_chunks=1).double(), stack(["local", "full"], 0.0, ff_chunks=3).double()
    three.load_state_dict(one.state_dict())
    x, mask = inputs(T=50)  # 50 tokens: chunks of 17, 17, 16
    for reversible in (False, True):
        assert_same(run(one, x, mask, reversible), run(three, x, mask, reversible), tol=1e-9)


@pytest.mark.parametrize("batch", [1, 2])  # one sequence: chunks written in place; two: copied in
def test_feed_forward_recomputed_by_hand_matches_autograd_and_plain_residual(monkeypatch, batch):
    """The backward differentiates a pre-norm feed-forward by hand, chunk by chunk: the same gradients as
    autograd's recompute and the plain stack, also for a frozen feed-forward parameter."""
    from genoformer.model import reversible

    calls = []
    real = reversible.pre_norm_backward
    monkeypatch.setattr(reversible, "pre_norm_backward", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    seq = stack(["local", "full"], 0.0, ff_chunks=3).double().train()
    seq.blocks[1].g.fn.net[0].bias.requires_grad_(False)
    x, mask = inputs()
    x, mask = x[:batch], mask[:batch]
    plain, by_hand = run(seq, x, mask, reversible=False), run(seq, x, mask, reversible=True)
    assert len(calls) == 2 * 3  # two blocks, three chunks each
    monkeypatch.setattr(reversible, "differentiable_by_hand", lambda g, x: False)
    by_autograd = run(seq, x, mask, reversible=True)
    assert len(calls) == 6
    frozen = [i for i, g in enumerate(plain[1]) if g is None]
    assert len(frozen) == 1 and [i for i, g in enumerate(by_hand[1]) if g is None] == frozen
    keep = lambda result: (result[0], [g for i, g in enumerate(result[1]) if i not in frozen])
    assert_same(keep(plain), keep(by_hand), tol=1e-6)
    assert_same(keep(by_autograd), keep(by_hand), tol=1e-9)


def test_long_inputs_get_more_feed_forward_chunks_with_the_same_function(monkeypatch):
    from genoformer.model import reversible

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


@pytest.mark.skipif(not HAS_LSH, reason="genoformer/model/lsh.py not written yet")
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


@pytest.mark.parametrize("kinds", [["local", "full"]] + ([["lsh", "local"]] if HAS_LSH else []))
def test_autocast_state_is_replayed_in_recompute(kinds):
    """Forward under bf16 autocast, backward outside it (the usual training loop)."""
    torch.manual_seed(0)
    seq = stack(kinds, 0.1 if "lsh" not in kinds else 0.0).train()
    x, mask = inputs(torch.float32)

    def run_autocast(reversible):
        seq.zero_grad(set_to_none=True)
        xx = x.clone().requires_grad_()
        torch.manual_seed(0)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y1, y2 = seq(xx, xx, reversible=reversible, mask=mask)
        (y1.float().square().sum() + y2.float().sum()).backward()
        return [xx.grad] + [p.grad for p in seq.parameters()]

    plain, rev = run_autocast(False), run_autocast(True)
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


@pytest.mark.parametrize("autocast", [False, True])
def test_recompute_runs_under_the_forward_autocast_state(autocast):
    f, g = AutocastProbe(), AutocastProbe()
    seq = ReversibleSequence([ReversibleBlock(f, g)])
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

    def grads(reversible):
        y1, y2 = seq(x, x, reversible=reversible, mask=mask)
        return torch.autograd.grad((y1 * y2).sum(), trainable)

    for a, b in zip(grads(True), grads(False)):
        assert relative_error(a, b) <= 1e-6
    assert frozen.grad is None


def test_no_grad_runs_the_plain_path():
    seq = stack(["local"], 0.0)
    x, mask = inputs(torch.float32)
    with torch.no_grad():
        y1, _ = seq(x, x, reversible=True, mask=mask)
    assert y1.grad_fn is None


def test_reformer_reversible_flag_changes_memory_not_the_function():
    config = dict(vocab_size=20, d_model=32, depth=3, heads=4, attention=KINDS[:3] if len(KINDS) >= 3 else "local",
                  bucket_size=8, n_hashes=2, window_size=8, hash_seed=3)
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
    """Gradients are gathered per block into one buffer: a feed-forward tied across two blocks must get the
    sum of both blocks' shares, and a frozen parameter none."""
    torch.manual_seed(0)
    seq = stack(["local", "full"], 0.0).double()
    seq.blocks[1].g = seq.blocks[0].g  # tied: one module, two blocks
    seq.blocks[0].f.norm.weight.requires_grad_(False)
    x, mask = inputs()
    plain, rev = run(seq, x, mask, reversible=False), run(seq, x, mask, reversible=True)
    assert [g is None for g in plain[1]] == [g is None for g in rev[1]]
    assert sum(g is None for g in rev[1]) == 1  # the frozen norm weight
    frozen = [i for i, g in enumerate(rev[1]) if g is None]
    keep = lambda result: (result[0], [g for i, g in enumerate(result[1]) if i not in frozen])
    assert_same(keep(plain), keep(rev), tol=1e-6)
