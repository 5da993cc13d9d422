"""Per-base stem and decoder: shapes, which bases each token and prediction reads, checkpoints."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genoformer.errors import CheckpointError, UsageError
from genoformer.io.evidence import EVIDENCE_FEATURES, EVIDENCE_UNITS
from genoformer.model import ReformerConfig
from genoformer.model.checkpoint import META, load_checkpoint, save_checkpoint
from genoformer.model.decoder import PerBaseDecoder
from genoformer.model.heads import GenoModel, PerBaseHead, batch_inputs, mlm_letters
from genoformer.model.per_base import LEGACY, PerBaseConfig
from genoformer.model.stem import RADIUS, EvidenceScaling, Stem
from genoformer.tokenize import KmerTokenizer, ProteinTokenizer

KS = [(k, s) for k in range(1, 9) for s in sorted({1, max(1, k // 2), k - 1, k} - {0})]


def random_inputs(n_bases: int, n_evidence: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    bases = torch.randint(0, 5, (2, n_bases), generator=g)
    soft = torch.rand(2, n_bases, generator=g) < 0.3
    evidence = torch.rand(2, n_bases, len(EVIDENCE_FEATURES), generator=g) * 40
    return bases, soft, evidence[..., :max(n_evidence, 1)]


@pytest.mark.parametrize("k,stride", KS)
def test_stem_pools_each_tokens_own_bases_and_stays_local(k, stride):
    torch.manual_seed(k * 10 + stride)
    tok, n_bases = KmerTokenizer(k, stride), 61
    stem = Stem(tok, d_model=8, width=6, n_evidence=len(EVIDENCE_FEATURES)).eval()
    bases, soft, evidence = random_inputs(n_bases, len(EVIDENCE_FEATURES))
    per_base, tokens = stem(bases, soft, evidence)
    T = tok.n_tokens(n_bases)
    assert per_base.shape == (2, n_bases, 6) and tokens.shape == (2, T, 8)
    starts, ends = tok.token_spans(T)
    for b in (0, 17, n_bases - 1):
        changed = bases.clone()
        changed[:, b] = (changed[:, b] + 1) % 5
        other_base, other_tokens = stem(changed, soft, evidence)
        moved = (other_base - per_base).abs().amax((0, 2)) > 0
        near = (torch.arange(n_bases) - b).abs() <= RADIUS
        assert moved[b] and not moved[~near].any()
        moved_tokens = ((other_tokens - tokens).abs().amax((0, 2)) > 0).numpy()
        reach = (starts <= b + RADIUS) & (ends > b - RADIUS)  # tokens whose k bases lie near b
        assert not moved_tokens[~reach].any() and moved_tokens[(starts <= b) & (ends > b)].all()


@pytest.mark.parametrize("k,stride", KS)
def test_decoder_gives_each_base_exactly_one_prediction_from_its_owner(k, stride):
    torch.manual_seed(k + 100 * stride)
    tok, n_bases = KmerTokenizer(k, stride), 53
    T = tok.n_tokens(n_bases)
    decoder = PerBaseDecoder(8, tok, 3, width=5, depth=0, skip_width=4).eval()  # no convolutions: per base only
    hidden, skip = torch.randn(1, T, 8), torch.randn(1, n_bases, 4)
    out = decoder(hidden, n_bases, skip)
    assert out.shape == (1, n_bases, 3)
    owners = tok.token_of_base(n_bases)
    readers = np.zeros(n_bases, dtype=int)
    for t in range(T):
        changed = hidden.clone()
        changed[:, t] += 1
        moved = ((decoder(changed, n_bases, skip) - out).abs().amax((0, 2)) > 0).numpy()
        assert (moved == (owners == t)).all()
        readers += moved
    assert (readers == 1).all()  # every base reads exactly one token
    for b in (0, n_bases // 2, n_bases - 1):  # and its own skip features, no other base's
        changed = skip.clone()
        changed[:, b] += 1
        moved = ((decoder(hidden, n_bases, changed) - out).abs().amax((0, 2)) > 0).numpy()
        assert moved.nonzero()[0].tolist() == [b]


def test_evidence_scaling_by_unit():
    scale = EvidenceScaling(len(EVIDENCE_FEATURES), "share")
    ev = torch.zeros(1, 2, len(EVIDENCE_FEATURES))
    col = {name: i for i, name in enumerate(EVIDENCE_FEATURES)}
    ev[0, 0, col["depth"]], ev[0, 0, col["A"]], ev[0, 0, col["mean_base_quality"]] = 40, 10, 30
    ev[0, 0, col["alt_fraction"]], ev[0, 0, col["mean_insertion_length"]] = 0.25, 3
    out = scale(ev)[0, 0]
    assert out[col["depth"]] == pytest.approx(np.log1p(40)) and out[col["A"]] == pytest.approx(0.25)
    assert out[col["mean_base_quality"]] == pytest.approx(0.5) and out[col["alt_fraction"]] == pytest.approx(0.25)
    assert out[col["mean_insertion_length"]] == pytest.approx(np.log1p(3))
    assert not scale(ev)[0, 1].any()  # no reads: all zero, no division by zero
    assert set(EVIDENCE_UNITS) == set(EVIDENCE_FEATURES)


def test_weighed_scaling_tells_one_stray_read_from_a_heterozygous_site(chr20):
    """NA12878: at a base where 1 read of >= 30 shows another base the alt reads' mean quality is as high as at a
    GIAB heterozygous SNV; weighed by the alt share it is a small input there, and each weighed column is its
    "share" value times its reads' share of depth (computed here from the raw columns)."""
    import pysam

    from genoformer.io.alignments import Alignments
    from genoformer.io.evidence import EVIDENCE_MEAN_OVER, Evidence
    from genoformer.io.fasta import Reference

    start, end = 10_000_000, 10_010_000
    with Reference(chr20["fasta"]) as reference:
        ev = Alignments(chr20["bam"], reference).evidence("chr20", start, end)
    with pysam.VariantFile(str(chr20["vcf"])) as vcf:
        het = [r.pos - 1 - start for r in vcf.fetch("chr20", start, end)
               if len(r.ref) == len(r.alts[0]) == 1 and sorted(r.samples[0]["GT"]) == [0, 1]]
    depth = ev[:, Evidence.depth]
    stray = np.nonzero((np.round(ev[:, Evidence.alt_fraction] * depth) == 1) & (depth >= 30))[0]
    assert len(het) >= 10 and len(stray) >= 50
    share = EvidenceScaling(len(EVIDENCE_FEATURES), "share")(torch.from_numpy(ev)[None])[0].numpy()
    weighed = EvidenceScaling(len(EVIDENCE_FEATURES), "weighed")(torch.from_numpy(ev)[None])[0].numpy()
    alt_q = Evidence.alt_base_quality
    assert np.median(share[stray, alt_q]) > 0.5 * np.median(share[het, alt_q])  # the defect "weighed" removes
    assert weighed[stray, alt_q].max() < 0.05 < 0.15 < weighed[het, alt_q].min()
    for name, over in EVIDENCE_MEAN_OVER.items():
        col, n = Evidence[name], ev[:, Evidence[over]]
        fraction = n if over.endswith("fraction") else np.divide(n, depth, out=np.zeros_like(n), where=depth > 0)
        np.testing.assert_allclose(weighed[:, col], share[:, col] * fraction, rtol=1e-6, atol=1e-7)
    untouched = [c for c in range(len(EVIDENCE_FEATURES)) if EVIDENCE_FEATURES[c] not in EVIDENCE_MEAN_OVER]
    np.testing.assert_array_equal(weighed[:, untouched], share[:, untouched])


def test_checkpoints_without_evidence_scaling_read_by_share():
    assert PerBaseConfig.from_dict({"stem": True}).evidence_scaling == "share"
    assert PerBaseConfig().evidence_scaling == "weighed"
    with pytest.raises(UsageError, match="evidence-scaling"):
        PerBaseConfig(evidence_scaling="log")


SMALL = PerBaseConfig(stem_width=8, decoder_width=8, decoder_depth=1)


def tiny(tok, task="variant", n_classes=3, n_evidence=len(EVIDENCE_FEATURES), per_base=SMALL):
    config = ReformerConfig(vocab_size=tok.vocab_size, d_model=16, depth=1, heads=2, attention="full")
    return GenoModel(config, tok, task, n_classes=n_classes, n_evidence=n_evidence, per_base=per_base)


@pytest.mark.parametrize("task,n_classes,n_evidence,shape", [
    ("variant", 3, len(EVIDENCE_FEATURES), (2, 40, 3)), ("pattern", 2, 0, (2, 40, 2)),
    ("mlm", 0, 0, (2, 40, 4)), ("classify", 5, 0, (2, 5))])
def test_models_with_stem_and_decoder(task, n_classes, n_evidence, shape):
    tok = KmerTokenizer(6, 4)
    model = tiny(tok, task, n_classes, n_evidence)
    assert isinstance(model.head, PerBaseDecoder) == (task != "classify") and model.fusion is None
    bases, soft, evidence = random_inputs(40, n_evidence)
    tokens = torch.from_numpy(np.stack([tok.encode_codes(b.numpy().astype(np.uint8)) for b in bases]))
    batch = {"tokens": tokens, "token_mask": torch.ones_like(tokens, dtype=torch.bool), "valid": soft, "bases": bases,
             "soft_mask": soft} | ({"evidence": evidence} if n_evidence else {})
    out = model(**batch_inputs(batch, "cpu"))
    assert out.shape == shape
    out.sum().backward()
    assert model.stem.sequence_in.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="bases"):
        model(tokens, evidence=batch.get("evidence"), n_bases=40)


def test_ablation_and_legacy_models_keep_their_heads():
    tok = KmerTokenizer(3)
    assert isinstance(tiny(tok, per_base=PerBaseConfig(stem=True, decoder=False)).head, PerBaseHead)
    legacy = tiny(tok, per_base=None)
    assert legacy.per_base == LEGACY and legacy.stem is None and legacy.fusion is not None
    assert isinstance(tiny(tok, "mlm", 0, 0, per_base=LEGACY).head, torch.nn.Linear)
    assert mlm_letters(tok) == 4 and mlm_letters(ProteinTokenizer(1)) == 26


def test_checkpoint_round_trip_with_stem_and_decoder(tmp_path):
    torch.manual_seed(0)
    tok = KmerTokenizer(4, 2)
    per_base = PerBaseConfig(stem_width=12, decoder_width=10, decoder_depth=3, dropout=0.1)
    model = tiny(tok, per_base=per_base).eval()
    head = {"n_classes": 3, "n_evidence": len(EVIDENCE_FEATURES), "evidence_features": list(EVIDENCE_FEATURES)}
    folder = save_checkpoint(tmp_path / "run", model, {"step": 3, "head": head}, {})
    loaded, meta, _ = load_checkpoint(tmp_path / "run")
    assert meta["per_base"] == per_base.to_dict() and loaded.per_base == per_base
    bases, soft, evidence = random_inputs(30, len(EVIDENCE_FEATURES))
    tokens = torch.from_numpy(np.stack([tok.encode_codes(b.numpy().astype(np.uint8)) for b in bases]))
    kw = dict(evidence=evidence, n_bases=30, bases=bases, soft_mask=soft)
    torch.testing.assert_close(loaded.eval()(tokens, **kw), model(tokens, **kw), rtol=0, atol=0)

    # a checkpoint from before the per-base section is a legacy model; foreign evidence columns are refused
    legacy = tiny(tok, n_evidence=10, per_base=None)
    old = save_checkpoint(tmp_path / "old", legacy, {"step": 1, "head": {"n_classes": 3, "n_evidence": 10}}, {})
    meta_path = old / META
    body = json.loads(meta_path.read_text())
    del body["per_base"]
    meta_path.write_text(json.dumps(body))
    assert load_checkpoint(old)[0].per_base == LEGACY
    body = json.loads((folder / META).read_text())
    body["head"]["evidence_features"] = ["depth", "quality"]
    (folder / META).write_text(json.dumps(body))
    with pytest.raises(CheckpointError, match="read evidence columns"):
        load_checkpoint(folder)


def test_pretrained_stem_and_decoder_transfer():
    tok = KmerTokenizer(3)
    mlm = tiny(tok, "mlm", 0, 0)
    variant = tiny(tok)
    copied = variant.load_pretrained(mlm)
    assert "stem.sequence_in.weight" in copied and "head.up.weight" in copied and "head.out.weight" not in copied
    assert not any(name.startswith("stem.evidence_in") for name in copied)
    torch.testing.assert_close(variant.stem.sequence_in.weight, mlm.stem.sequence_in.weight)


def test_a_padded_sequence_decodes_as_it_does_alone():
    """Padding bases read as nothing in the stem and decoder: per-residue logits do not see the batch."""
    torch.manual_seed(4)
    tok = ProteinTokenizer(2, 1)
    model = tiny(tok, "classify_residues", 3, 0, PerBaseConfig(stem_width=8, decoder_width=8, decoder_depth=2)).eval()
    for name, module in model.named_modules():  # norms as training leaves them: norm(0) is then not 0
        if isinstance(module, torch.nn.LayerNorm) and (name.startswith(("stem.", "head."))):
            torch.nn.init.normal_(module.bias)
    seqs = ["MKTAYIAKQRQISFVKSHFS", "MADEEKLPPGWEKRMSRSSGRVYYFNHITNASQWERPSG"]

    def batch(chosen: list[str]) -> dict:
        n = max(map(len, chosen))
        codes = [tok.codes(s) for s in chosen]
        ids = [tok.encode_codes(c) for c in codes]
        tokens = torch.full((len(chosen), max(map(len, ids))), tok.pad_id)
        bases = torch.full((len(chosen), n), tok.pad_code)
        valid = torch.zeros(len(chosen), n, dtype=torch.bool)
        for b, (c, i) in enumerate(zip(codes, ids)):
            tokens[b, :len(i)], bases[b, :len(c)], valid[b, :len(c)] = torch.from_numpy(i), torch.from_numpy(c), True
        return {"tokens": tokens, "token_mask": tokens != tok.pad_id, "valid": valid, "bases": bases}

    with torch.no_grad():
        together = model(**batch_inputs(batch(seqs), "cpu"))
        for b, seq in enumerate(seqs):
            alone = model(**batch_inputs(batch([seq]), "cpu"))[0]
            torch.testing.assert_close(together[b, :len(seq)], alone, atol=1e-5, rtol=1e-5)
