"""FastEngine computes the plain stack's function (outputs and gradients), running by hand what it can; and the
default Reformer does run its blocks by hand on CPU float32, so a change that silently turns that off fails here."""
from __future__ import annotations

import pytest
import torch
from stacks import KINDS, assert_same, inputs, relative_error, run, run_autocast, stack, without

from genoformer.model import Reformer, ReformerConfig
from genoformer.model.fast import FastEngine, adapter, engine, feedforward
from genoformer.model.fast import lsh as fast_lsh
from genoformer.model.fast.feedforward import PreNormFeedForward
from genoformer.model.fast.lsh import PreNormLSH
from genoformer.model.lsh import LSHSelfAttention
from genoformer.model.reversible import Engine


def fast_stack(kinds: list[str], dropout: float, **kw):
    return stack(kinds, dropout, engine=FastEngine(), **kw)


@pytest.mark.parametrize("dropout", [0.0, 0.2])
def test_fast_engine_matches_the_plain_residual_stack_and_the_plain_engine(dropout):
    torch.manual_seed(0)
    seq = fast_stack(KINDS + ["local"], dropout).double().train()
    x, mask = inputs()
    fast = run(seq, x, mask, reversible=True)
    assert_same(run(seq, x, mask, reversible=False), fast, tol=1e-6)
    seq.engine = Engine()
    assert_same(run(seq, x, mask, reversible=True), fast, tol=1e-6)


@pytest.mark.parametrize("by_hand", [True, False], ids=["attend_backward", "autograd"])
@pytest.mark.parametrize("group_rows", [1, 192, 2 ** 16])  # one head per group, two heads, all at once
def test_lsh_recomputed_a_head_group_at_a_time_matches_plain_residual(monkeypatch, group_rows, by_hand):
    monkeypatch.setattr(fast_lsh, "GROUP_ROWS", group_rows)
    if not by_hand:  # the path mixed precision takes: each head group recomputed under autograd
        monkeypatch.setattr(fast_lsh, "full_precision", lambda x: False)
    torch.manual_seed(0)
    seq = fast_stack(["lsh", "local", "lsh"], 0.0).double().train()
    x, mask = inputs()
    groups = fast_lsh.head_groups(seq.blocks[0].f.fn, *x.shape[:2], x.device)
    assert len(groups) == {1: 4, 192: 2, 2 ** 16: 1}[group_rows]
    assert_same(run(seq, x, mask, reversible=False), run(seq, x, mask, reversible=True), tol=1e-6)


@pytest.mark.parametrize("kept_blocks", [1, 2, 3])
@pytest.mark.parametrize("group_rows", [1, 2 ** 16])
def test_last_lsh_blocks_reuse_their_forward_attention_in_backward(monkeypatch, group_rows, kept_blocks):
    """The backward starts at the last blocks, whose forward pass keeps each head group's order, output
    and log-sum-exp (the last KEPT_BLOCKS LSH blocks, whatever other blocks lie between): their
    recompute neither hashes nor attends again, and the gradients stay exact."""
    monkeypatch.setattr(fast_lsh, "GROUP_ROWS", group_rows)
    monkeypatch.setattr(engine, "KEPT_BLOCKS", kept_blocks)
    calls = {"forward": 0, "hash": 0}
    real_forward, real_hash = fast_lsh.attention_forward, LSHSelfAttention._hash

    def counting_forward(*args, **kwargs):
        calls["forward"] += 1
        return real_forward(*args, **kwargs)

    def counting_hash(self, *args, **kwargs):
        calls["hash"] += 1
        return real_hash(self, *args, **kwargs)

    monkeypatch.setattr(fast_lsh, "attention_forward", counting_forward)
    monkeypatch.setattr(LSHSelfAttention, "_hash", counting_hash)
    torch.manual_seed(0)
    seq = fast_stack(["lsh", "lsh", "local", "lsh"], 0.0).double().train()
    x, mask = inputs()
    groups = len(fast_lsh.head_groups(seq.blocks[0].f.fn, *x.shape[:2], x.device))
    plain = run(seq, x, mask, reversible=False)
    calls.update(forward=0, hash=0)
    rev = run(seq, x, mask, reversible=True)
    # forward: the three LSH blocks, every group; backward: the groups of the LSH blocks not kept
    recomputed = 3 - min(kept_blocks, 3)
    assert calls == {"forward": (3 + recomputed) * groups, "hash": (3 + recomputed) * groups}
    assert_same(plain, rev, tol=1e-6)


def test_one_workspace_serves_every_lsh_block_forward_and_backward(monkeypatch):
    """A reversible pass hands every LSH block, in its forward pass and in the backward recompute, the
    same Workspace, so each [T, width] buffer is mapped once a step, not once per block and pass."""
    monkeypatch.setattr(fast_lsh, "GROUP_ROWS", 1)  # a head per group
    seen = []
    real_attend_in = fast_lsh.attend_in

    def recording_attend_in(attention, workspace, *args, **kwargs):
        seen.append(workspace)
        return real_attend_in(attention, workspace, *args, **kwargs)

    monkeypatch.setattr(fast_lsh, "attend_in", recording_attend_in)
    torch.manual_seed(0)
    seq = fast_stack(["lsh", "local", "lsh", "lsh"], 0.0).double().train()
    x, mask = inputs()
    plain = run(seq, x, mask, reversible=False)
    assert seen == []  # with autograd on, the plain stack attends through the layers' kernel
    rev = run(seq, x, mask, reversible=True)
    groups = len(fast_lsh.head_groups(seq.blocks[0].f.fn, *x.shape[:2], x.device))
    assert len(seen) == 2 * 3 * groups  # three LSH blocks, forward and backward, each group
    assert len({id(w) for w in seen}) == 1
    assert_same(plain, rev, tol=1e-6)


@pytest.mark.parametrize("batch", [1, 2])  # one sequence: chunks written in place; two: copied in
def test_feed_forward_recomputed_by_hand_matches_autograd_and_plain_residual(monkeypatch, batch):
    """The backward differentiates a pre-norm feed-forward by hand, chunk by chunk: the same gradients as
    autograd's recompute and the plain stack, also for a frozen feed-forward parameter."""
    calls = []
    real = feedforward.pre_norm_backward
    monkeypatch.setattr(feedforward, "pre_norm_backward", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    seq = fast_stack(["local", "full"], 0.0, ff_chunks=3).double().train()
    seq.blocks[1].g.fn.expand.bias.requires_grad_(False)
    x, mask = inputs()
    x, mask = x[:batch], mask[:batch]
    plain, by_hand = run(seq, x, mask, reversible=False), run(seq, x, mask, reversible=True)
    assert len(calls) == 2 * 3  # two blocks, three chunks each
    monkeypatch.setattr(PreNormFeedForward, "can_run_by_hand", lambda self, x: False)
    by_autograd = run(seq, x, mask, reversible=True)
    assert len(calls) == 6
    frozen = [i for i, g in enumerate(plain[1]) if g is None]
    assert len(frozen) == 1 and [i for i, g in enumerate(by_hand[1]) if g is None] == frozen
    assert_same(without(plain, frozen), without(by_hand, frozen), tol=1e-6)
    assert_same(without(by_autograd, frozen), without(by_hand, frozen), tol=1e-9)


def test_shared_and_frozen_parameters_get_the_plain_stacks_gradients():
    """Gradients are gathered per block into one buffer: a feed-forward tied across two blocks must get the
    sum of both blocks' shares, and a frozen parameter none."""
    torch.manual_seed(0)
    seq = fast_stack(["lsh", "full"], 0.0).double()
    seq.blocks[1].g = seq.blocks[0].g  # tied: one module, two blocks (adapters follow the blocks)
    seq.blocks[0].f.norm.weight.requires_grad_(False)
    x, mask = inputs()
    plain, rev = run(seq, x, mask, reversible=False), run(seq, x, mask, reversible=True)
    assert [g is None for g in plain[1]] == [g is None for g in rev[1]]
    frozen = [i for i, g in enumerate(rev[1]) if g is None]
    assert len(frozen) == 1  # the frozen norm weight
    assert_same(without(plain, frozen), without(rev, frozen), tol=1e-6)


def test_float32_tolerance():
    torch.manual_seed(0)
    seq = fast_stack(KINDS, 0.1).train()
    x, mask = inputs(torch.float32)
    tol = 100 * torch.finfo(torch.float32).eps  # ~1e-5; measured ~5e-7 (reconstruction rounding)
    assert_same(run(seq, x, mask, reversible=False), run(seq, x, mask, reversible=True), tol=tol)


def test_autocast_matches_the_plain_engine():
    """Under bf16 autocast LSH blocks run by head groups through autograd: the plain engine's gradients."""
    torch.manual_seed(0)
    seq = fast_stack(["lsh", "local"], 0.0).train()
    x, mask = inputs(torch.float32)
    fast = run_autocast(seq, x, mask, True)
    seq.engine = Engine()
    errors = [relative_error(f, p) for f, p in zip(fast, run_autocast(seq, x, mask, True))]
    assert max(errors) <= 1e-2, max(errors)


def test_no_grad_forward_equals_the_plain_engines():
    torch.manual_seed(0)
    seq = fast_stack(KINDS, 0.0).double().eval()
    x, mask = inputs()
    with torch.no_grad():
        torch.manual_seed(1)  # LSH draws its hash seed
        fast = seq(x, x, mask=mask)
        seq.engine = Engine()
        torch.manual_seed(1)
        plain = seq(x, x, mask=mask)
    for a, b in zip(fast, plain):
        assert relative_error(a, b) <= 1e-12


def count_calls(monkeypatch, owner, name: str, calls: dict, key: str) -> None:
    real = getattr(owner, name)

    def wrapper(*args, **kwargs):
        calls[key] = calls.get(key, 0) + 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, wrapper)


def test_the_default_reformer_runs_its_blocks_by_hand_on_cpu_float32(monkeypatch):
    """Every LSH attention and every feed-forward of a default Reformer (reversible, LSH, no dropout) takes the
    fast path in training (forward and backward by hand) and in inference (forward by hand)."""
    config = ReformerConfig(vocab_size=12, d_model=32, heads=4, depth=3, bucket_size=8, n_hashes=2)
    model = Reformer(config).train()
    assert isinstance(model.layers.engine, FastEngine)
    assert [type(adapter(b.f)) for b in model.layers.blocks] == [PreNormLSH] * 3
    assert [type(adapter(b.g)) for b in model.layers.blocks] == [PreNormFeedForward] * 3
    calls: dict[str, int] = {}
    for owner, name, key in ((PreNormLSH, "forward_by_hand", "lsh forward"),
                             (PreNormLSH, "backward_by_hand", "lsh backward"),
                             (fast_lsh, "project_by_heads", "lsh heads forward"),
                             (fast_lsh, "attend_backward", "lsh heads backward"),
                             (PreNormFeedForward, "backward_by_hand", "ff backward"),
                             (feedforward, "pre_norm_backward", "ff chunk backward")):
        count_calls(monkeypatch, owner, name, calls, key)
    tokens = torch.randint(1, 12, (2, 40))
    model(tokens).square().sum().backward()
    groups = len(fast_lsh.head_groups(model.lsh_attention[0], 2, 48, torch.device("cpu")))  # 40 tokens padded to 48
    assert calls == {"lsh forward": 3, "lsh backward": 3, "lsh heads forward": 3, "lsh heads backward": 3 * groups,
                     "ff backward": 3, "ff chunk backward": 3}
    calls.clear()
    with torch.no_grad():
        model.eval()(tokens)
    assert calls == {"lsh forward": 3, "lsh heads forward": 3}
