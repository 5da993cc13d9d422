"""--candidate-weight for the variant loss: candidate bases against a simulated truth, the weighted loss
against a hand computation, and the CLI's clean failures."""
from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pysam
import pytest
import torch

from genoformer.io.alignments import Alignments
from genoformer.io.evidence import EVIDENCE_FEATURES, Evidence
from genoformer.io.fasta import Reference
from genoformer.io.variant_classes import VARIANT_CLASSES, variant_class
from genoformer.simulate.genome import simulate
from genoformer.train import TrainConfig, dry_run
from genoformer.train.losses import CANDIDATE_FRACTION, candidate_bases, forward_loss

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from test_bad_inputs import assert_clean_failure  # noqa: E402
from test_class_weights import FixedLogits  # noqa: E402


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("cand") / "example", 5, contigs=(("chrA", 20000),), coverage=30.0,
                    variant_rate=1 / 200)


def test_every_simulated_variant_is_a_candidate_and_few_other_bases_are(example):
    ref = Reference(example.reference)
    evidence = torch.from_numpy(Alignments(str(example.reads), ref).evidence("chrA", 0, 20000))
    candidate = candidate_bases(evidence[None])[0].numpy()
    depth = evidence[:, Evidence.depth].numpy()
    where = np.zeros(20000, dtype=bool)  # the base each truth record's reads differ at (as the labels place it)
    with pysam.VariantFile(str(example.truth_vcf)) as vcf:
        for rec in vcf.fetch("chrA"):
            (alt,) = rec.alts
            if len(rec.ref) == len(alt) == 1 or len(alt) > len(rec.ref):  # SNV; insertion: on its anchor
                where[rec.start] = True
            else:  # deletion: the deleted bases
                where[rec.start + 1:rec.start + len(rec.ref)] = True
    covered = depth >= 10
    assert where[covered].sum() > 50
    assert candidate[where & covered].all()
    # sequencing errors seldom reach CANDIDATE_FRACTION of 10+ reads
    assert candidate[~where & covered].mean() < 0.01


def test_candidate_bases_by_hand():
    ev = np.zeros((1, 4, len(EVIDENCE_FEATURES)), dtype=np.float32)
    ev[0, :, Evidence.depth] = [20, 20, 20, 0]
    ev[0, 0, Evidence.alt_fraction] = CANDIDATE_FRACTION  # at the bound: a candidate
    ev[0, 1, Evidence.deletions] = 1  # 1 of 20 deleting: 0.05, not one
    ev[0, 2, Evidence.insertions] = 3  # 0.15: one
    ev[0, 3, Evidence.alt_fraction] = 1  # no reads: never one
    assert candidate_bases(torch.from_numpy(ev))[0].tolist() == [True, False, True, False]


def test_candidate_weighted_loss_by_hand():
    torch.manual_seed(0)

    logits = torch.randn(2, 5, len(VARIANT_CLASSES))
    genotype = torch.tensor([[0, 0, 1, -100, 0], [2, 0, 0, -100, 1]])
    variant_type = torch.tensor([[0, 0, 1, -100, 0], [3, 0, 0, -100, 2]])  # an SNV, a deletion, an insertion
    classes = variant_class(genotype.numpy(), variant_type.numpy())
    evidence = torch.zeros(2, 5, len(EVIDENCE_FEATURES))
    evidence[..., Evidence.depth] = 30
    is_candidate = torch.tensor([[0, 1, 1, 1, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    evidence[..., Evidence.alt_fraction] = is_candidate * 0.5
    batch = {"tokens": torch.zeros(2, 2, dtype=torch.long), "token_mask": torch.ones(2, 2, dtype=torch.bool),
             "valid": torch.ones(2, 5, dtype=torch.bool), "genotype": genotype, "variant_type": variant_type,
             "evidence": evidence}
    w, cw = [0.5, 20.0, 40.0, 25.0, 35.0, 30.0, 45.0], 7.0
    loss, _ = forward_loss(FixedLogits(logits), "variant", batch, torch.device("cpu"), class_weights=torch.tensor(w),
                           candidate_weight=cw)
    logp = torch.log_softmax(logits, -1).numpy()
    num = den = 0.0
    for b in range(2):
        for i in range(5):
            y = int(classes[b, i])
            if y != -100:
                weight = w[y] * (cw if is_candidate[b, i] else 1.0)
                num -= weight * logp[b, i, y]
                den += weight
    assert float(loss) == pytest.approx(num / den, rel=1e-5)
    same, _ = forward_loss(FixedLogits(logits), "variant", batch, torch.device("cpu"), class_weights=torch.tensor(w),
                           candidate_weight=1.0)
    plain, _ = forward_loss(FixedLogits(logits), "variant", {k: v for k, v in batch.items() if k != "evidence"},
                            torch.device("cpu"), class_weights=torch.tensor(w))
    assert float(same) == pytest.approx(float(plain), rel=1e-6)  # weight 1: the plain weighted loss


def test_reference_candidate_weight_by_hand():
    """A hom_ref base that reads contradict takes the reference candidate weight instead of hom_ref's; a
    variant candidate and a hom_ref base without contrary reads keep their class weight."""
    torch.manual_seed(1)
    logits = torch.randn(1, 4, len(VARIANT_CLASSES))
    genotype = torch.tensor([[0, 0, 1, -100]])
    variant_type = torch.tensor([[0, 0, 1, -100]])  # hom_ref candidate, hom_ref, het SNV, unscored
    evidence = torch.zeros(1, 4, len(EVIDENCE_FEATURES))
    evidence[..., Evidence.depth] = 30
    evidence[0, [0, 2, 3], Evidence.alt_fraction] = 0.4
    batch = {"tokens": torch.zeros(1, 2, dtype=torch.long), "token_mask": torch.ones(1, 2, dtype=torch.bool),
             "valid": torch.ones(1, 4, dtype=torch.bool), "genotype": genotype, "variant_type": variant_type,
             "evidence": evidence}
    w, rw = [0.5, 20.0, 40.0, 25.0, 35.0, 30.0, 45.0], 33.0
    logp = torch.log_softmax(logits, -1)[0]
    snv_het = VARIANT_CLASSES.index("snv_het")
    for cw in (1.0, 3.0):
        loss, _ = forward_loss(FixedLogits(logits), "variant", batch, torch.device("cpu"),
                               class_weights=torch.tensor(w), candidate_weight=cw, reference_candidate_weight=rw)
        weights = [cw * rw, w[0], cw * w[snv_het]]
        expected = -(weights[0] * logp[0, 0] + weights[1] * logp[1, 0] + weights[2] * logp[2, snv_het]) / sum(weights)
        assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_balanced_weights_give_reference_candidates_the_variant_mean(example, tmp_path):
    config = TrainConfig(task="variant", reference=str(example.reference), bam=str(example.reads),
                         truth_vcf=str(example.truth_vcf), window=1024, k=1,
                         model=dict(d_model=16, depth=1, heads=2, attention="full"), out=str(tmp_path / "run"))
    data = dry_run(config)["data"]  # the variant task's default: balanced
    non_ref = [data["class_weights"][name] for name in VARIANT_CLASSES if name != "hom_ref"]
    assert data["reference_candidate_weight"] == pytest.approx(sum(non_ref) / len(non_ref))
    assert data["reference_candidate_weight"] > 100 * data["class_weights"]["hom_ref"]
    explicit = dry_run(dataclasses.replace(config, class_weights="1,30,30,30,30,30,30"))["data"]
    assert "reference_candidate_weight" not in explicit  # only balanced adds it


@pytest.mark.parametrize("task, value, needle", [("mlm", "10", "variant task"), ("variant", "0", "candidate-weight"),
                                                 ("variant", "-3", "candidate-weight")])
def test_cli_bad_candidate_weight(example, tmp_path, task, value, needle):
    args = ["--task", task, "--reference", str(example.reference), "--candidate-weight", value,
            "--out", str(tmp_path / "run"), "--dry-run"]
    if task == "variant":
        args += ["--bam", str(example.reads), "--truth-vcf", str(example.truth_vcf)]
    proc = subprocess.run([sys.executable, "-m", "genoformer", "train", *args], capture_output=True, text=True)
    assert_clean_failure(proc, 2, needle)
    assert not (tmp_path / "run").exists()


def test_a_candidate_weight_replaces_the_default_class_weights():
    from genoformer.train import TrainConfig

    base = dict(task="variant", reference="r.fa", bam="r.bam", truth_vcf="t.vcf")
    assert TrainConfig(**base).class_weights == "balanced"  # the task's default
    assert TrainConfig(**base, candidate_weight=100).class_weights == "none"
    given = TrainConfig(**base, candidate_weight=100, class_weights="balanced").class_weights
    assert given == "balanced"  # given, it stays
