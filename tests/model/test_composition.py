"""The k-mer composition of a per-sequence head: against k-mers counted by hand, padding, the model, checkpoints."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from genoformer.errors import UsageError
from genoformer.model import ReformerConfig
from genoformer.model.checkpoint import load_checkpoint, save_checkpoint
from genoformer.model.composition import KmerComposition
from genoformer.model.heads import GenoModel, batch_inputs
from genoformer.model.per_base import PerBaseConfig
from genoformer.tokenize import KmerTokenizer, ProteinTokenizer

KMER_INDEX = {"".join(kmer): i for i, kmer in enumerate(itertools.product("ACGT", repeat=3))}


def by_hand(weight: np.ndarray, seq: str, k: int = 3) -> np.ndarray:
    """The weights of the sequence's n overlapping k-mers spelt only in A, C, G, T, summed, over sqrt(n / 4^k)."""
    rows = [weight[KMER_INDEX[seq[i:i + k]]] for i in range(len(seq) - k + 1) if set(seq[i:i + k]) <= set("ACGT")]
    return np.sum(rows, 0) / np.sqrt(len(rows) / 4 ** k)


def codes(tok: KmerTokenizer, seqs: list[str], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Letter codes [B, width] padded with N, and valid [B, width]."""
    bases = torch.full((len(seqs), width), tok.pad_code, dtype=torch.long)
    valid = torch.zeros(len(seqs), width, dtype=torch.bool)
    for i, seq in enumerate(seqs):
        bases[i, :len(seq)] = torch.from_numpy(tok.codes(seq).astype(np.int64))
        valid[i, :len(seq)] = True
    return bases, valid


def test_composition_sums_the_weights_of_the_sequences_acgt_kmers_whatever_the_padding():
    torch.manual_seed(0)
    tok = KmerTokenizer(3)
    composition = KmerComposition(3, 2)
    torch.nn.init.normal_(composition.weight.weight)
    weight = composition.weight.weight.detach().numpy()
    rng = np.random.default_rng(1)
    seqs = ["".join(rng.choice(list("ACGT"), 40)), "ACGTNACGTTTAN", "GATTACA"]
    seqs.append(seqs[1].lower())  # soft-masked letters are the same k-mers
    bases, valid = codes(tok, seqs, 50)
    out = composition(bases, valid).detach().numpy()
    for i, seq in enumerate(seqs):
        np.testing.assert_allclose(out[i], by_hand(weight, seq.upper()), rtol=1e-5, atol=1e-6)
        alone = composition(*codes(tok, [seq], len(seq))).detach().numpy()[0]
        np.testing.assert_allclose(alone, out[i], rtol=1e-5, atol=1e-6)  # the batch's padding is not a k-mer
    assert not composition(*codes(tok, ["NNNNN", "AC"], 5)).any()  # no k-mer of A, C, G, T: nothing added


def tiny(per_base: PerBaseConfig, task: str = "classify", tok=None) -> GenoModel:
    tok = tok or KmerTokenizer(6)
    config = ReformerConfig(vocab_size=tok.vocab_size, d_model=16, depth=1, heads=2, attention="full")
    return GenoModel(config, tok, task, n_classes=2, per_base=per_base)


def inputs(tok: KmerTokenizer, seqs: list[str]) -> dict:
    width = max(map(len, seqs))
    bases, valid = codes(tok, seqs, width)
    tokens = torch.full((len(seqs), tok.n_tokens(width)), tok.pad_id, dtype=torch.long)
    for i, seq in enumerate(seqs):
        ids = torch.from_numpy(tok.encode(seq).astype(np.int64))
        tokens[i, :len(ids)] = ids
    return batch_inputs({"tokens": tokens, "token_mask": tokens != tok.pad_id, "valid": valid, "bases": bases},
                        "cpu")


def test_a_classify_model_adds_the_composition_to_the_encoders_logits_and_learns_it(tmp_path):
    torch.manual_seed(2)
    with_it = tiny(PerBaseConfig(composition_k=3)).eval()
    without = tiny(PerBaseConfig()).eval()
    without.load_state_dict({k: v for k, v in with_it.state_dict().items() if "composition" not in k})
    batch = inputs(with_it.tokenizer, ["ACGTACGGTTACGATCGATCGGA", "TTTTGGGGCCCCAAAATGCA"])
    torch.testing.assert_close(with_it(**batch), without(**batch), rtol=0, atol=0)  # it starts at zero
    torch.nn.init.normal_(with_it.head.composition.weight.weight)
    added = with_it.head.composition(batch["bases"], batch["valid"])
    torch.testing.assert_close(with_it(**batch), without(**batch) + added, rtol=1e-6, atol=1e-6)
    with_it(**batch)[:, 0].sum().backward()
    assert with_it.head.composition.weight.weight.grad.abs().sum() > 0

    save_checkpoint(tmp_path / "run", with_it, {"step": 1, "head": {"n_classes": 2, "n_evidence": 0}}, {})
    loaded, meta, _ = load_checkpoint(tmp_path / "run")
    assert meta["per_base"]["composition_k"] == 3 and loaded.head.composition.k == 3
    torch.testing.assert_close(loaded.eval()(**batch), with_it(**batch), rtol=0, atol=0)


@pytest.mark.parametrize("value", [-1, 9, True, 2.5])
def test_a_bad_composition_k_is_refused(value):
    with pytest.raises(UsageError, match="composition-k must be an integer from 0"):
        PerBaseConfig(composition_k=value)


@pytest.mark.parametrize("task,tok", [("variant", KmerTokenizer(3)), ("pattern", KmerTokenizer(3)),
                                      ("classify", ProteinTokenizer(1))])
def test_composition_is_refused_where_there_is_no_dna_sequence_head(task, tok):
    with pytest.raises(UsageError, match="composition-k adds the k-mer composition to a per-sequence head of DNA"):
        tiny(PerBaseConfig(composition_k=3), task, tok)
