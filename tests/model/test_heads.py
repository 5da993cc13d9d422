"""Per-base heads and evidence fusion against plain per-token / per-base loops."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from genoformer.model import ReformerConfig
from genoformer.model.heads import EvidenceFusion, GenoModel, PerBaseHead
from genoformer.tokenize import KmerTokenizer


@pytest.mark.parametrize("k,stride,n_bases", [(3, 3, 20), (4, 1, 17), (6, 4, 33), (5, 2, 5)])
def test_per_base_head_reads_each_base_from_its_owner(k, stride, n_bases):
    torch.manual_seed(0)
    tok = KmerTokenizer(k, stride)
    T = tok.n_tokens(n_bases)
    head = PerBaseHead(8, tok, 3)
    hidden = torch.randn(2, T, 8)
    out = head(hidden, n_bases)
    per_token = head.proj(hidden).view(2, T, k, 3)
    owners = tok.token_of_base(n_bases)
    for b in range(n_bases):
        t = int(owners[b])
        assert t * stride <= b < t * stride + k
        torch.testing.assert_close(out[:, b], per_token[:, t, b - t * stride])


@pytest.mark.parametrize("k,stride,n_bases", [(3, 3, 10), (4, 2, 11), (2, 1, 6)])
def test_evidence_fusion_matches_a_loop_over_tokens(k, stride, n_bases):
    torch.manual_seed(1)
    tok = KmerTokenizer(k, stride)
    T = tok.n_tokens(n_bases)
    fusion = EvidenceFusion(16, tok, 5)
    evidence = torch.rand(2, n_bases, 5) * 50
    tokens = torch.from_numpy(tok.encode("ACGTN" * n_bases)[:T]).expand(2, T)
    out = fusion(evidence, tokens)
    for t in range(T):
        vecs = [evidence[:, b] if b < n_bases else torch.zeros(2, 5) for b in range(t * stride, t * stride + k)]
        expected = fusion.proj(torch.log1p(torch.cat(vecs, dim=1)))
        torch.testing.assert_close(out[:, t], expected)


@pytest.mark.parametrize("k,stride", [(3, 3), (4, 2)])
def test_read_evidence_gets_reference_agreement_per_base(k, stride):
    torch.manual_seed(3)
    tok, n_bases = KmerTokenizer(k, stride), 13
    seq = "ACGTNACGGTACG"
    T = tok.n_tokens(n_bases)
    tokens = torch.from_numpy(tok.encode(seq)).unsqueeze(0)
    counts = torch.randint(0, 20, (1, n_bases, 4)).float()
    evidence = torch.cat((counts.sum(-1, keepdim=True) + 2, counts, torch.rand(1, n_bases, 5) * 9), -1)  # 10 features
    fusion = EvidenceFusion(16, tok, 10)
    assert fusion.against_reference and fusion.proj.in_features == k * 12
    out = fusion(evidence, tokens)
    for t in range(T):
        parts = []
        for j in range(k):
            b = t * stride + j
            if b >= n_bases:
                parts.append(torch.zeros(12))
                continue
            depth, acgt = float(evidence[0, b, 0]), counts[0, b]
            agree = float(acgt["ACGT".index(seq[b])]) if seq[b] in "ACGT" else 0.0
            parts.append(torch.cat((torch.log1p(evidence[0, b]),
                                    torch.tensor([agree / depth, (float(acgt.sum()) - agree) / depth]))))
        torch.testing.assert_close(out[0, t], fusion.proj(torch.cat(parts)))


def tiny_config(tok, **kw):
    return ReformerConfig(vocab_size=tok.vocab_size, d_model=16, depth=2, heads=2, attention="full", **kw)


def test_fused_evidence_reaches_the_output_and_gets_gradients():
    torch.manual_seed(2)
    tok = KmerTokenizer(3)
    model = GenoModel(tiny_config(tok), tok, "variant", n_classes=3, n_evidence=4)
    tokens = torch.from_numpy(tok.encode("ACGTACGTTGCAACG")).unsqueeze(0)
    evidence = torch.rand(1, 15, 4) * 30
    out = model(tokens, evidence=evidence, n_bases=15)
    assert out.shape == (1, 15, 3)
    # zero fusion weights: exactly the plain encoder's output through the head
    with torch.no_grad():
        model.fusion.proj.weight.zero_()
        model.fusion.proj.bias.zero_()
    plain = model.head(model.encoder(tokens), 15)
    torch.testing.assert_close(model(tokens, evidence=evidence, n_bases=15), plain)
    with torch.no_grad():
        model.fusion.proj.weight.normal_()
    fused = model(tokens, evidence=evidence, n_bases=15)
    assert not torch.allclose(fused, plain)
    fused.sum().backward()
    assert model.fusion.proj.weight.grad.abs().sum() > 0
    # outside a forward call the hook adds nothing
    torch.testing.assert_close(model.head(model.encoder(tokens), 15), plain)


def test_mlm_head_gives_token_logits():
    tok = KmerTokenizer(2)
    model = GenoModel(tiny_config(tok), tok, "mlm")
    tokens = torch.from_numpy(np.stack([tok.encode("ACGTAC"), tok.encode("GGTTAA")]))
    assert model(tokens).shape == (2, 3, tok.vocab_size)
