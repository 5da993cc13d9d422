"""The per-base stem and decoder learn what the token-level heads do not, on tiny budgets:
a planted het SNV from its reads, masked bases of a tandem repeat."""
from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import read_factory as rf
from fasta_factory import write_fasta
from genoformer.data.datasets import WindowDataset
from genoformer.data.windows import Window, tile
from genoformer.io.alignments import Alignments
from genoformer.io.fasta import Reference
from genoformer.model.checkpoint import load_checkpoint
from genoformer.model.heads import batch_inputs
from genoformer.tokenize import KmerTokenizer
from genoformer.train import TrainConfig, train
from genoformer.train.losses import forward_loss, hidden_bases, spelled_bases


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def snv_sample(dst: Path, n: int, seed: int, positions: list[int]) -> dict:
    seq = rf.random_sequence(n, seed)
    planted = [rf.Planted("snv", p, "ACGT"[("ACGT".index(seq[p]) + 1 + p % 3) % 4]) for p in positions]
    return rf.write_sample(dst, seq, planted, read_length=60, step=4)


@pytest.fixture(scope="module")
def snv_samples(tmp_path_factory):
    """Error-free reads at ~30x from two haplotypes: het SNVs every 60 bases to train on, two more to test."""
    root = tmp_path_factory.mktemp("snv")
    return snv_sample(root / "train", 4000, 1, list(range(50, 3950, 60))), snv_sample(root / "test", 400, 2, [150, 290])


def genotypes(run: Path, sample: dict) -> np.ndarray:
    model = load_checkpoint(run)[0].eval()
    ref = Reference(sample["reference"])
    item = WindowDataset(ref, [], model.tokenizer, alignments=Alignments(sample["bam"], ref))[Window("c", 0, 400, 400)]
    with torch.no_grad():
        logits = model(**batch_inputs({k: v[None] for k, v in item.items() if torch.is_tensor(v)}, "cpu"))
    return logits[0].argmax(-1).numpy()


def test_stem_and_decoder_call_a_planted_het_snv_that_the_token_head_misses(snv_samples, tmp_path):
    train_sample, test_sample = snv_samples
    common = dict(task="variant", reference=str(train_sample["reference"]), bam=str(train_sample["bam"]),
                  truth_vcf=str(train_sample["vcf"]), window=256, k=6, d_model=32, depth=1, heads=2, attention="full",
                  lr=3e-3, warmup_steps=3, batch_size=4, max_steps=60, class_weights=[1] + [10] * 6,
                  val_every=10 ** 6, ckpt_every=10 ** 6, progress=False, device="cpu")
    others = np.setdiff1d(np.arange(400), [150, 290])
    train(TrainConfig.from_dict(common | dict(out=str(tmp_path / "per_base"))))  # stem and decoder: the defaults
    called = genotypes(tmp_path / "per_base", test_sample)
    assert called[[150, 290]].tolist() == [1, 1] and not called[others].any()  # het there, hom-ref elsewhere
    train(TrainConfig.from_dict(common | dict(stem=False, decoder=False, out=str(tmp_path / "token_head"))))
    assert genotypes(tmp_path / "token_head", test_sample)[[150, 290]].tolist() == [0, 0]


@pytest.mark.parametrize("k,stride", [(3, 3), (4, 2), (1, 1)])
def test_masked_bases_are_hidden_from_tokens_and_stem(k, stride):
    tok = KmerTokenizer(k, stride)
    W = 23
    T = tok.n_tokens(W)
    valid = torch.arange(W)[None] < 21
    masked = torch.zeros(1, T, dtype=torch.bool)
    masked[0, [1, T - 1]] = True
    bases, tokens = hidden_bases(masked, valid, tok)
    owners = tok.token_of_base(W)
    expect_bases = [bool(masked[0, owners[b]]) and b < 21 for b in range(W)]
    assert bases[0].tolist() == expect_bases
    starts, ends = tok.token_spans(T)
    expect_tokens = [any(expect_bases[b] for b in range(s, min(e, W))) for s, e in zip(starts, ends)]
    assert tokens[0].tolist() == expect_tokens and tokens[0, 1]


@pytest.mark.parametrize("k,stride", [(3, 3), (4, 2), (1, 1)])
def test_spelled_bases_are_the_spans_of_the_masked_tokens(k, stride):
    tok = KmerTokenizer(k, stride)
    W = 23
    T = tok.n_tokens(W)
    valid = torch.arange(W)[None] < 21
    masked = torch.zeros(1, T, dtype=torch.bool)
    masked[0, [1, T - 1]] = True
    starts, _ = tok.token_spans(T)
    expect = [any(masked[0, t] and starts[t] <= b < starts[t] + k for t in range(T)) and b < 21 for b in range(W)]
    assert spelled_bases(masked, valid, tok)[0].tolist() == expect


def test_a_token_level_mlm_hides_the_masked_k_mers_from_its_stem():
    """Stem on, decoder off: the masked k-mers are the targets, so the bases they spell must not reach the
    stem. Other letters there give the same logits, though the model does read those bases when shown them."""
    from genoformer.model.config import ReformerConfig
    from genoformer.model.heads import GenoModel
    from genoformer.model.per_base import PerBaseConfig
    from genoformer.tokenize import MASK_ID
    from genoformer.train.losses import span_mask

    tok = KmerTokenizer(3)
    W, T = 39, 13
    torch.manual_seed(0)
    model = GenoModel(ReformerConfig(vocab_size=tok.vocab_size, d_model=16, depth=1, heads=2, attention="full"), tok,
                      "mlm", per_base=PerBaseConfig(stem=True, decoder=False, stem_width=8)).eval()
    codes = np.random.default_rng(0).integers(0, 4, (2, W))
    token_mask, valid = torch.ones(2, T, dtype=torch.bool), torch.ones(2, W, dtype=torch.bool)
    masked = span_mask(token_mask, 0.2, 2, torch.Generator().manual_seed(0))  # what forward_loss draws below
    spelled = spelled_bases(masked, valid, tok).numpy()
    other = np.where(spelled, (codes + 1) % 4, codes)  # every base of a masked k-mer changed

    def batch(c: np.ndarray) -> dict:
        return {"tokens": torch.stack([torch.from_numpy(tok.encode_codes(row)) for row in c]),
                "token_mask": token_mask, "valid": valid, "bases": torch.from_numpy(c),
                "soft_mask": torch.zeros(2, W, dtype=torch.bool)}

    logits = [forward_loss(model, "mlm", batch(c), torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                           mask_fraction=0.2, mask_span=2)[1]["logits"] for c in (codes, other)]
    torch.testing.assert_close(logits[0], logits[1], rtol=0, atol=0)
    with torch.no_grad():  # shown the letters, the stem tells them apart
        shown = [model(**(batch_inputs(batch(c), "cpu") | {"tokens": batch(c)["tokens"].masked_fill(masked, MASK_ID)}))
                 for c in (codes, other)]
    assert not torch.allclose(shown[0], shown[1])


def test_per_base_mlm_learns_a_tandem_repeat_in_bits_per_base(tmp_path):
    rng = np.random.default_rng(0)
    unit = rng.choice(list("ACGT"), 37)
    seq = np.tile(unit, 600)
    mutated = rng.random(seq.size) < 0.02
    seq[mutated] = rng.choice(list("ACGT"), mutated.sum())
    fasta = write_fasta(tmp_path / "repeat.fa", {"rep": "".join(seq)})
    common = dict(task="mlm", reference=str(fasta), train_regions=["rep:1-18,000"], val_regions=["rep:18,001-22,200"],
                  window=256, k=3, d_model=32, depth=2, heads=2, attention="full", lr=3e-3, warmup_steps=3,
                  batch_size=4, max_steps=40, val_every=40, progress=False)
    train(TrainConfig.from_dict(common | dict(out=str(tmp_path / "per_base"))))
    logged = {r["metric"]: float(r["value"]) for r in csv.DictReader((tmp_path / "per_base" / "metrics.csv").open())
              if r["split"] == "val"}
    # copying from the previous copy of the unit: well under the 2 bits of a uniform guess
    assert logged["bits_per_base"] < 1.3 and logged["accuracy"] > 0.6
    # the loaded checkpoint reproduces them: per masked base, in bits
    model = load_checkpoint(tmp_path / "per_base")[0].eval()
    ref = Reference(fasta)
    windows = tile([ref.region("rep:18,001-22,200")], 256, contig_lengths=ref.contigs)[:8]
    ds = WindowDataset(ref, windows, model.tokenizer)
    gen = torch.Generator().manual_seed(0)
    nats, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(ds), 4):
            batch = {key: torch.stack([ds[j][key] for j in range(i, min(i + 4, len(ds)))])
                     for key in ("tokens", "token_mask", "valid", "bases", "soft_mask")}
            _, out = forward_loss(model, "mlm", batch, torch.device("cpu"), generator=gen)
            scored = out["target"] != -100
            assert out["logits"].shape[-1] == 4 and scored.any()
            nats += float(torch.nn.functional.cross_entropy(out["logits"][scored], out["target"][scored],
                                                            reduction="sum"))
            n += int(scored.sum())
    assert nats / n / math.log(2) == pytest.approx(logged["bits_per_base"], rel=1e-4)
    # the token-level mlm on the same budget: one of 68 tokens per position, barely past chance
    train(TrainConfig.from_dict(common | dict(stem=False, decoder=False, out=str(tmp_path / "tokens"))))
    tokens = {r["metric"]: float(r["value"]) for r in csv.DictReader((tmp_path / "tokens" / "metrics.csv").open())
              if r["split"] == "val"}
    assert tokens["accuracy"] < 0.3 and "bits_per_base" not in tokens


def test_options_reach_the_model_through_the_cli(snv_samples, tmp_path, capsys):
    """--dry-run resolves the per-base options into the config; bad values fail with one line (exit 2)."""
    for folder in ("cli", "predict"):
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / folder))
    from test_bad_inputs import assert_clean_failure
    from test_predict import cli_in_process

    sample = snv_samples[0]
    args = ["train", "--task", "variant", "--reference", sample["reference"], "--bam", sample["bam"],
            "--truth-vcf", sample["vcf"], "--window", 256, "--k", 3, "--d-model", 16, "--depth", 1, "--heads", 2,
            "--attention", "full", "--out", tmp_path / "run", "--dry-run"]
    proc = cli_in_process(capsys, *args, "--no-decoder", "--stem-width", 24, "--dropout", 0.1, "--weight-decay", 0.05,
                          "--rc-augment", "--shift-augment", 3, "--decoder-width", 40, "--decoder-depth", 3)
    assert proc.returncode == 0, proc.stderr
    config = json.loads(proc.stdout)["config"]
    # the stem, the decoder and dropout are model options (the model section); the rest trains
    assert {key: config["model"][key] for key in ("stem", "stem_width", "decoder", "decoder_width", "decoder_depth",
                                                  "dropout")} == \
        {"stem": True, "stem_width": 24, "decoder": False, "decoder_width": 40, "decoder_depth": 3, "dropout": 0.1}
    assert {key: config[key] for key in ("weight_decay", "rc_augment", "shift_augment")} == \
        {"weight_decay": 0.05, "rc_augment": True, "shift_augment": 3}
    assert_clean_failure(cli_in_process(capsys, *args, "--stem-width", 0), 2, "stem-width")
    assert_clean_failure(cli_in_process(capsys, *args, "--dropout", 1.5), 2, "dropout")
    assert_clean_failure(cli_in_process(capsys, *args, "--shift-augment", -2), 2, "shift-augment")
