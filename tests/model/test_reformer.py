"""Reformer encoder: lengths, padding, causality, seeds, config validation (checkpoints: test_checkpoint.py)."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from genoformer.errors import InputError, UsageError
from genoformer.model import Reformer, ReformerConfig
from genoformer.model.reversible import Engine

KINDS = ["full", "local", "lsh"]


def small(**overrides) -> ReformerConfig:
    values = dict(vocab_size=30, d_model=32, depth=2, heads=4, bucket_size=8, n_hashes=2, window_size=8,
                  attention="local", hash_seed=7)
    values.update(overrides)
    return ReformerConfig(**values)


def model(**overrides) -> Reformer:
    torch.manual_seed(0)
    return Reformer(small(**overrides)).eval()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("T", [1, 15, 16, 33])
def test_any_length(kind, T):
    m = model(attention=kind)
    tokens = torch.randint(1, 30, (2, T))
    out = m(tokens)
    assert out.shape == (2, T, 32) and torch.isfinite(out).all()


@pytest.mark.parametrize("kind", ["full", "local"])
def test_user_padding_equals_the_unpadded_sequence(kind):
    """Extra masked positions (more internal blocks) change nothing at real positions: masks reach every layer."""
    m = model(attention=kind, depth=3)
    tokens = torch.randint(1, 30, (2, 21))
    padded = torch.cat([tokens, torch.randint(1, 30, (2, 40))], dim=1)
    mask = torch.zeros(2, 61, dtype=torch.bool)
    mask[:, :21] = True
    assert torch.allclose(m(padded, mask)[:, :21], m(tokens), atol=1e-5)


def test_mask_reaches_every_attention_layer():
    m = model(attention=(KINDS * 2)[:4], depth=4)
    m.layers.engine = Engine()  # the fast engine runs LSH by hand, not through forward (fast/test_engine.py)
    seen = []
    for block in m.layers.blocks:
        block.f.fn.register_forward_pre_hook(lambda mod, args, kwargs: seen.append(kwargs.get("mask")), with_kwargs=True)
    mask = torch.rand(2, 19, generator=torch.Generator().manual_seed(1)) > 0.5
    m(torch.randint(0, 30, (2, 19)), mask)
    padded = torch.zeros(2, m.length_multiple * -(-19 // m.length_multiple), dtype=torch.bool)
    padded[:, :19] = mask
    assert len(seen) == 4 and all(s is not None and torch.equal(s, padded) for s in seen)


@pytest.mark.parametrize("kind", KINDS)
def test_padding_content_does_not_change_real_outputs(kind):
    m = model(attention=kind)
    tokens = torch.randint(1, 30, (2, 40))
    mask = torch.rand(2, 40, generator=torch.Generator().manual_seed(0)) > 0.25
    other = torch.where(mask, tokens, torch.randint(1, 30, (2, 40)))
    a, b = m(tokens, mask), m(other, mask)
    assert torch.equal(a[mask], b[mask])


@pytest.mark.parametrize("kind", KINDS)
def test_all_padding_is_finite(kind):
    m = model(attention=kind, causal=True)
    out = m(torch.randint(0, 30, (2, 20)), torch.zeros(2, 20, dtype=torch.bool))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", ["full", "local"])
def test_causal_outputs_ignore_later_tokens(kind):
    m = model(attention=kind, causal=True, depth=3)
    tokens = torch.randint(1, 30, (1, 45))
    changed = tokens.clone()
    changed[:, 25:] = torch.randint(1, 30, (1, 20))
    a, b = m(tokens), m(changed)
    assert torch.allclose(a[:, :25], b[:, :25], atol=1e-5)
    assert not torch.allclose(a[:, 25:], b[:, 25:], atol=1e-3)


def test_causal_lsh_never_attends_to_later_positions():
    """LSH outputs at i can still move with later tokens (they shift the bucket chunk boundaries, as in every
    Reformer), so causality is checked on what each query attends to, in every layer."""
    m = model(attention="lsh", causal=True, depth=3)
    found = m.inspect(torch.randint(1, 30, (2, 45)), top_k=2 * 8 * 2)
    assert sorted(found) == [0, 1, 2]
    query = torch.arange(45)[None, None, :, None]
    for inspection in found.values():
        attended = inspection.top_positions >= 0
        assert attended.any(-1).all()  # every query attends to something (itself at least)
        assert not (attended & (inspection.top_positions > query)).any()


def test_mixed_attention_per_layer():
    kinds = (KINDS * 2)[:4]
    m = model(attention=kinds, depth=4)
    kinds_built = [type(block.f.fn).__name__ for block in m.layers.blocks]
    names = {"full": "FullAttention", "local": "LocalAttention", "lsh": "LSHSelfAttention"}
    assert kinds_built == [names[k] for k in kinds]
    out = m(torch.randint(0, 30, (2, 50)))
    assert out.shape == (2, 50, 32) and torch.isfinite(out).all()


def test_same_hash_seed_gives_identical_outputs():
    m = model(attention="lsh", hash_seed=None)
    tokens = torch.randint(0, 30, (2, 64))
    m.set_hash_seed(11)
    a = m(tokens)
    torch.manual_seed(123)  # the global RNG no longer matters
    b = m(tokens)
    assert torch.equal(a, b)
    assert {i: attention.hash_seed for i, attention in m.lsh_attention.items()} == {0: 11, 1: 12}
    m.set_hash_seed(None)
    assert not torch.allclose(m(tokens), m(tokens))


def test_the_hash_seed_comes_from_the_config():
    """A model built with config.hash_seed (as predict and buckets build theirs) is the model set_hash_seed fixes."""
    config = small(attention=["lsh", "local", "lsh"], depth=3, hash_seed=None)
    torch.manual_seed(0)
    built = Reformer(dataclasses.replace(config, hash_seed=11)).eval()
    torch.manual_seed(0)
    set_later = Reformer(config).eval()
    set_later.set_hash_seed(11)
    assert {i: a.hash_seed for i, a in built.lsh_attention.items()} == {0: 11, 2: 13}
    assert built.lsh_layers() == [0, 2] and set_later.config.hash_seed is None  # the config keeps its value
    tokens = torch.randint(0, 30, (2, 64))
    assert torch.equal(built(tokens), set_later(tokens))


def test_inspect_reports_each_lsh_layer_for_the_users_length():
    m = model(attention=["lsh", "local", "lsh"], depth=3, hash_seed=None)
    tokens = torch.randint(0, 30, (2, 37))
    found = m.inspect(tokens, top_k=4)
    assert sorted(found) == [0, 2]
    for inspection in found.values():
        assert inspection.buckets.shape == (2, 4, 2, 37)
        assert inspection.top_positions.shape == (2, 4, 37, 4)
    with pytest.raises(UsageError, match="layer 1"):
        m.inspect(tokens, layers=[1])


@pytest.mark.parametrize("causal", [False, True])
def test_inspect_for_a_range_of_queries_equals_that_slice_of_the_full_result(causal):
    """37 tokens are padded to 48 inside: ranges count the user's tokens, and padding is never a query."""
    m = model(attention=["lsh", "local", "lsh"], depth=3, causal=causal)
    tokens = torch.randint(1, 30, (2, 37))
    mask = torch.ones(2, 37, dtype=torch.bool)
    mask[1, 30:] = False
    full = m.inspect(tokens, mask, top_k=6)
    for queries in [(0, 37), (12, 13), slice(20, None), (37, 37)]:
        part = m.inspect(tokens, mask, top_k=6, queries=queries)
        rows = range(37)[queries[0]:queries[1]] if isinstance(queries, tuple) else range(37)[queries]
        assert sorted(part) == [0, 2]
        for i, inspection in part.items():
            assert inspection.queries == rows and inspection.buckets.shape == (2, 4, 2, 37)
            assert torch.equal(inspection.buckets, full[i].buckets)
            assert torch.equal(inspection.top_positions, full[i].top_positions[:, :, rows.start:rows.stop])
            assert torch.equal(inspection.top_weights, full[i].top_weights[:, :, rows.start:rows.stop])
    with pytest.raises(UsageError, match="queries"):
        m.inspect(tokens, mask, queries=(30, 48))  # inside the padded length, past the user's tokens


def test_bf16_autocast_forward_is_finite():
    m = model(attention=KINDS * 1, depth=len(KINDS))
    tokens = torch.randint(0, 30, (2, 40))
    mask = torch.ones(2, 40, dtype=torch.bool)
    mask[1] = False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(tokens, mask)
    assert torch.isfinite(out).all()


def test_bad_tokens_and_masks():
    m = model()
    with pytest.raises(InputError, match="vocab"):
        m(torch.tensor([[1, 2, 30]]))
    with pytest.raises(UsageError):
        m(torch.rand(1, 5))
    with pytest.raises(UsageError, match="mask shape"):
        m(torch.ones(1, 5, dtype=torch.long), torch.ones(1, 4, dtype=torch.bool))
    # out-of-vocabulary ids under padding are fine: padding is never looked at
    mask = torch.tensor([[True, True, False]])
    assert torch.isfinite(m(torch.tensor([[1, 2, 999]]), mask)).all()


@pytest.mark.parametrize("bad, message", [
    (dict(heads=5), "divide d_model"),
    (dict(d_model=36, heads=12), "even"),
    (dict(attention=["local", "full", "local"]), "depth"),
    (dict(attention="sparse"), "unknown"),
    (dict(attention=["local", "dense"]), "unknown"),
    (dict(depth=0), "depth"),
    (dict(depth=True), "integer"),
    (dict(dropout=1.0), "dropout"),
    (dict(pad_token_id=30), "vocabulary"),
    (dict(hash_seed=-1), "hash_seed"),
    (dict(reversible="yes"), "reversible"),
])
def test_bad_configs_raise_usage_error(bad, message):
    with pytest.raises(UsageError, match=message):
        small(**bad)


def test_config_json_round_trip(tmp_path):
    config = small(attention=["local", "full"], dropout=0.1, causal=True, hash_seed=None)
    config.save_json(tmp_path / "c.json")
    assert ReformerConfig.load_json(tmp_path / "c.json") == config
    assert ReformerConfig.from_dict(json.loads(config.to_json())) == config
    assert list(tmp_path.iterdir()) == [tmp_path / "c.json"]  # no temp files left


def test_config_rejects_unknown_keys_and_bad_json(tmp_path):
    with pytest.raises(UsageError, match="n_layers"):
        ReformerConfig.from_dict({**small().to_dict(), "n_layers": 3})
    path = tmp_path / "c.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="c.json: not valid JSON, expected a model config"):  # bad data: exit 3
        ReformerConfig.load_json(path)
    with pytest.raises(InputError):
        ReformerConfig.load_json(tmp_path / "missing.json")
