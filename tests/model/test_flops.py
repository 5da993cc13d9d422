"""model/flops.py against torch's own FLOP counter (torch.utils.flop_counter), part by part, on tiny models.

The counter sees the matrix products a forward pass dispatches.  The accelerator's sizing (sizing.py) runs the
LSH kernel by batched matmuls and hashes every round in one product, as on a GPU (the CPU's fused flash kernels
are not counted by torch), and SDPA's math backend makes full attention's products visible too.
"""
from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from genoformer.model import sizing
from genoformer.model.config import ReformerConfig
from genoformer.model.flops import TRAIN_STEP_FACTOR, model_flops, train_step_flops
from genoformer.model.heads import GenoModel
from genoformer.model.lsh_hashing import bucket_factors
from genoformer.model.per_base import LEGACY, PerBaseConfig
from genoformer.tokenize import KmerTokenizer

TOKENIZER = KmerTokenizer(3, 2)
SMALL_PER_BASE = PerBaseConfig(stem_width=8, decoder_width=8)
# (task, per-base parts, read evidence columns): every head and input kind model_flops tells apart
MODELS = {"variant, stem and decoder": ("variant", SMALL_PER_BASE, 5),
          "variant, fusion and per-token head": ("variant", LEGACY, 5),
          "mlm, token logits": ("mlm", LEGACY, 0),
          "mlm, stem and decoder": ("mlm", SMALL_PER_BASE, 0),
          "classify, pooled": ("classify", LEGACY, 0)}


@pytest.fixture(autouse=True)
def accelerator_sizing(monkeypatch):
    monkeypatch.setattr(sizing, "SMALL_PIECE_DEVICES", ())


def tiny_model(task: str, per_base: PerBaseConfig, n_evidence: int, bucket_size: int = 8,
               reversible: bool = True) -> GenoModel:
    torch.manual_seed(0)
    config = ReformerConfig(vocab_size=TOKENIZER.vocab_size, d_model=32, depth=3, heads=2, bucket_size=bucket_size,
                            n_hashes=2, attention=["lsh", "local", "full"], window_size=16, reversible=reversible)
    return GenoModel(config, TOKENIZER, task, n_classes=3, n_evidence=n_evidence, per_base=per_base)


def model_inputs(model: GenoModel, n_bases: int, batch: int = 2) -> dict:
    g = torch.Generator().manual_seed(1)
    T = TOKENIZER.n_tokens(n_bases)
    inputs = {"tokens": torch.randint(5, TOKENIZER.vocab_size, (batch, T), generator=g),
              "token_mask": torch.ones(batch, T, dtype=torch.bool), "n_bases": n_bases,
              "bases": torch.randint(0, 4, (batch, n_bases), generator=g),
              "valid": torch.ones(batch, n_bases, dtype=torch.bool)}
    if model.n_evidence:
        inputs["evidence"] = torch.rand(batch, n_bases, model.n_evidence, generator=g) * 10
    return inputs


def counted(model: GenoModel, inputs: dict, backward: bool = False) -> FlopCounterMode:
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        if backward:
            model(**inputs).float().square().sum().backward()
        else:
            with torch.no_grad():
                model(**inputs)
    return counter


def module_total(counter: FlopCounterMode, name: str) -> int:
    return sum(counter.get_flop_counts().get(name, {}).values())


@pytest.mark.parametrize("name", MODELS)
def test_forward_flops_are_what_torch_counts_part_by_part(name):
    model = tiny_model(*MODELS[name]).eval()
    n_bases = 301  # 150 tokens, padded to 160 inside the encoder
    counter = counted(model, model_inputs(model, n_bases))
    parts = model_flops(model, n_bases, batch=2)
    encoder = sum(parts[p] for p in ("projections", "attention", "hashing", "feed_forward"))
    assert module_total(counter, "GenoModel.encoder") == encoder
    for part, module in (("stem", "GenoModel.stem"), ("fusion", "GenoModel.fusion"), ("head", "GenoModel.head")):
        assert module_total(counter, module) == parts.get(part, 0), part
    assert counter.get_total_flops() == sum(parts.values())


def test_hashing_flops_follow_the_factorised_bucket_counts():
    """Small buckets over 300 tokens: 150 buckets per round, factorised in two rotations (lsh_hashing.py)."""
    assert bucket_factors(TOKENIZER.n_tokens(601), 2) == (14, 12)
    model = tiny_model("classify", LEGACY, 0, bucket_size=2).eval()
    counter = counted(model, model_inputs(model, 601))
    assert counter.get_total_flops() == sum(model_flops(model, 601, batch=2).values())


def test_a_training_step_is_three_forward_passes_of_products():
    """Backward costs twice the forward's products but where no input gradient is needed (the stem's first
    convolutions, the hashing projections): a plain residual model's counted step is just under 3x."""
    model = tiny_model("variant", SMALL_PER_BASE, 5, reversible=False).train()
    n_bases = 301
    step = counted(model, model_inputs(model, n_bases), backward=True).get_total_flops()
    assert TRAIN_STEP_FACTOR == 3
    assert 0.98 * train_step_flops(model, n_bases, 2) <= step <= train_step_flops(model, n_bases, 2)
