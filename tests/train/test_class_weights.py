"""--class-weights for the variant loss: parsing, genotype counts against a pysam count of the truth,
the weighted loss against a hand computation, and the CLI's clean failures."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pysam
import pytest
import torch

from genoformer.coords import Interval, read_bed
from genoformer.errors import UsageError
from genoformer.io.fasta import Reference
from genoformer.io.variant_classes import VARIANT_CLASSES
from genoformer.io.variants import TruthVariants
from genoformer.simulate.genome import simulate
from genoformer.train import TrainConfig, dry_run
from genoformer.train.config import parse_class_weights
from genoformer.train.labels import class_counts
from genoformer.train.losses import forward_loss

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from test_bad_inputs import assert_clean_failure  # noqa: E402


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("cw") / "example", 3, contigs=(("chrA", 20000), ("chrB", 12000)))


def pysam_counts(vcf_path: Path, bed_path: Path, contig: str, length: int) -> list[int]:
    """Scored bases per class (hom_ref, then snv / insertion / deletion x het / hom_alt) on `contig`: simple
    biallelic records placed by hand, masked by the BED; overlaps keep the larger genotype and type."""
    genotype = np.zeros(length, dtype=np.int64)
    kind = np.zeros(length, dtype=np.int64)
    with pysam.VariantFile(str(vcf_path)) as vcf:
        for rec in vcf.fetch(contig):
            (alt,) = rec.alts
            gt = rec.samples[0]["GT"]
            g = 2 if all(gt) else 1 if any(gt) else 0
            if len(rec.ref) == len(alt) == 1:
                span, t = (rec.start, rec.start + 1), 1
            elif len(alt) == 1:  # deletion after the anchor base
                span, t = (rec.start + 1, rec.start + len(rec.ref)), 3
            else:  # insertion after the anchor base: evidence sits on the anchor
                assert len(rec.ref) == 1 and alt[0] == rec.ref
                span, t = (rec.start, rec.start + 1), 2
            genotype[span[0]:span[1]] = np.maximum(genotype[span[0]:span[1]], g)
            kind[span[0]:span[1]] = np.maximum(kind[span[0]:span[1]], t)
    scored = np.zeros(length, dtype=bool)
    for line in bed_path.read_text().splitlines():
        name, start, end = line.split("\t")[:3]
        if name == contig:
            scored[int(start):int(end)] = True
    classes = np.where(genotype > 0, 2 * kind + genotype - 2, 0)
    return np.bincount(classes[scored], minlength=7).tolist()


def test_parse_class_weights():
    assert parse_class_weights("none") == "none" and parse_class_weights(" Balanced") == "balanced"
    assert parse_class_weights("1,50,50,60,60,70,70") == [1.0, 50.0, 50.0, 60.0, 60.0, 70.0, 70.0]
    assert parse_class_weights([1, 2.5, 0, 1, 1, 1, 1]) == [1.0, 2.5, 0.0, 1.0, 1.0, 1.0, 1.0]  # a YAML list
    for bad in ("1,2", "1,50,50", "a,b,c,d,e,f,g", "1,-1,1,1,1,1,1", "0,0,0,0,0,0,0", "1,nan,1,1,1,1,1", "inverse"):
        with pytest.raises(UsageError, match="class-weights"):
            parse_class_weights(bad)
    with pytest.raises(UsageError, match="variant and pattern tasks"):
        TrainConfig(task="mlm", class_weights="balanced")


def test_genotype_counts_match_pysam(example):
    ref = Reference(str(example.reference))
    truth = TruthVariants(str(example.truth_vcf), ref)
    confident = read_bed(str(example.confident_bed), ref.contigs)
    expected = pysam_counts(example.truth_vcf, example.confident_bed, "chrA", 20000)
    assert all(n > 0 for n in expected[:4]) and expected[5] > 0
    # small chunks: variants and confident intervals cut at chunk edges count once
    assert class_counts(truth, [Interval("chrA", 0, 20000)], confident, chunk=997) == expected
    # without a confident BED every base is scored
    assert sum(class_counts(truth, [Interval("chrA", 0, 20000)], None)) == 20000


def test_balanced_weights_in_dry_run(example, tmp_path):
    config = TrainConfig(task="variant", reference=str(example.reference), bam=str(example.reads),
                         truth_vcf=str(example.truth_vcf), confident_bed=str(example.confident_bed),
                         train_regions=["chrA"], val_regions=["chrB"], window=1536, k=6,
                         model=dict(d_model=32, depth=2, heads=2, attention="full"), class_weights="balanced",
                         out=str(tmp_path / "run"))
    data = dry_run(config)["data"]
    counts = pysam_counts(example.truth_vcf, example.confident_bed, "chrA", 20000)
    assert data["label_counts"]["training regions"] == dict(zip(VARIANT_CLASSES, counts))
    assert data["label_counts"]["validation windows"] == dict(zip(
        VARIANT_CLASSES, pysam_counts(example.truth_vcf, example.confident_bed, "chrB", 12000)))
    rarest = min(n for n in counts if n)  # a class absent from the region is weighted as the rarest present
    for name, n in zip(VARIANT_CLASSES, counts):
        assert data["class_weights"][name] == pytest.approx(sum(counts) / (7 * (n or rarest)))


class FixedLogits(torch.nn.Module):
    """A model whose output is fixed logits, whatever its inputs: the loss is what is tested."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits

    def forward(self, tokens, token_mask, **inputs):
        return self.logits


def test_weighted_loss_by_hand():
    torch.manual_seed(0)
    logits = torch.randn(2, 7, 7)
    genotype = torch.tensor([[0, 0, 1, 2, -100, 1, 1], [2, 0, 0, -100, -100, 2, 0]])
    variant_type = torch.tensor([[0, 0, 1, 3, -100, 2, 3], [2, 0, 0, -100, -100, 1, 0]])
    target = torch.tensor([[0, 0, 1, 6, -100, 3, 5], [4, 0, 0, -100, -100, 2, 0]])  # the class of each base
    batch = {"tokens": torch.zeros(2, 2, dtype=torch.long), "token_mask": torch.ones(2, 2, dtype=torch.bool),
             "valid": torch.ones(2, 7, dtype=torch.bool), "genotype": genotype, "variant_type": variant_type}
    w = [0.5, 20.0, 40.0, 25.0, 45.0, 30.0, 50.0]
    loss, _ = forward_loss(FixedLogits(logits), "variant", batch, torch.device("cpu"), class_weights=torch.tensor(w))
    logp = torch.log_softmax(logits, -1).numpy()
    num = den = 0.0
    for b in range(2):
        for i in range(7):
            y = int(target[b, i])
            if y != -100:
                num -= w[y] * logp[b, i, y]
                den += w[y]
    assert float(loss) == pytest.approx(num / den, rel=1e-5)
    unweighted, _ = forward_loss(FixedLogits(logits), "variant", batch, torch.device("cpu"))
    scored = target != -100
    assert float(unweighted) == pytest.approx(-logp[scored.numpy(), target[scored].numpy()].mean(), rel=1e-5)


@pytest.mark.parametrize("value, needle", [("1,2", "class-weights must be"),
                                           ("balanced", "variant and pattern tasks")])
def test_cli_bad_class_weights(example, tmp_path, value, needle):
    task = "variant" if value != "balanced" else "mlm"
    args = ["--task", task, "--reference", str(example.reference), "--class-weights", value,
            "--out", str(tmp_path / "run"), "--dry-run"]
    if task == "variant":
        args += ["--bam", str(example.reads), "--truth-vcf", str(example.truth_vcf)]
    proc = subprocess.run([sys.executable, "-m", "genoformer", "train", *args], capture_output=True, text=True)
    assert_clean_failure(proc, 2, needle)
    assert not (tmp_path / "run").exists()


# --- pattern: each class's positive bases weighted n_negative / n_positive -------------------------------------

@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A seeded genome with soft-masked runs and two BED files (one class each), and the masks written by hand."""
    folder = tmp_path_factory.mktemp("pattern_cw")
    rng = np.random.default_rng(3)
    letters = rng.choice(list("ACGT"), 6000)
    lower = np.zeros(6000, dtype=bool)
    for start in (100, 2500, 4100):
        lower[start:start + 150 + start // 50] = True
    seq = "".join(b.lower() if low else b for b, low in zip(letters, lower))
    from fasta_factory import write_fasta
    fasta = write_fasta(folder / "genome.fa", {"chrA": seq})
    rows = [("chrA", 300, 420, "exon"), ("chrA", 1000, 1100, "exon"), ("chrA", 5000, 5600, "island")]
    beds = []
    for name in ("exon", "island"):
        beds.append(folder / f"{name}.bed")
        beds[-1].write_text("".join(f"{c}\t{s}\t{e}\n" for c, s, e, n in rows if n == name))
    return fasta, beds, lower, rows


def test_pattern_balanced_weights_against_hand_counts(tracked, tmp_path):
    fasta, beds, lower, rows = tracked
    region = (500, 5300)  # 1-based chrA:501-5300 cuts the first exon out and the island in half
    base = dict(task="pattern", reference=str(fasta), train_regions=[f"chrA:{region[0] + 1}-{region[1]}"],
                window=512, k=1, model=dict(d_model=16, depth=1, heads=2, attention="full"), class_weights="balanced")
    n = region[1] - region[0]
    by_hand = {}
    for c, s, e, name in rows:
        by_hand[name] = by_hand.get(name, 0) + max(0, min(e, region[1]) - max(s, region[0]))
    data = dry_run(TrainConfig(**base, bed=[str(b) for b in beds], out=str(tmp_path / "bed")))["data"]
    assert data["label_counts"]["training regions"] == by_hand
    for name, p in by_hand.items():
        assert data["class_weights"][name] == pytest.approx((n - p) / p)
    masked = int(lower[region[0]:region[1]].sum())  # no BED: the soft-masked bases are the class
    data = dry_run(TrainConfig(**base, out=str(tmp_path / "soft")))["data"]
    assert data["label_counts"]["training regions"] == {"soft_masked": masked}
    assert data["class_weights"]["soft_masked"] == pytest.approx((n - masked) / masked)
    # no island base in chrA:1-4800: nothing to balance, weight 1
    data = dry_run(TrainConfig(**base | {"train_regions": ["chrA:1-4800"]}, bed=[str(b) for b in beds],
                               out=str(tmp_path / "x")))["data"]
    assert data["class_weights"]["island"] == 1.0 and data["class_weights"]["exon"] > 1


def test_pattern_weighted_loss_by_hand():
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 2)
    tracks = (torch.rand(2, 5, 2) < 0.3).float()
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    batch = {"tokens": torch.zeros(2, 5, dtype=torch.long), "token_mask": torch.ones(2, 5, dtype=torch.bool),
             "valid": valid, "tracks": tracks}
    w = [7.0, 0.5]
    loss, _ = forward_loss(FixedLogits(logits), "pattern", batch, torch.device("cpu"), class_weights=torch.tensor(w))
    total, count = 0.0, 0
    for b in range(2):
        for i in range(5):
            if not valid[b, i]:
                continue
            for c in range(2):
                x, y = float(logits[b, i, c]), float(tracks[b, i, c])
                p = 1 / (1 + np.exp(-x))
                total -= w[c] * y * np.log(p) + (1 - y) * np.log(1 - p)
                count += 1
    assert float(loss) == pytest.approx(total / count, rel=1e-5)


def test_pattern_class_weights_refused_forms():
    for bad in ("1,2,3", [1.0, 2.0]):
        with pytest.raises(UsageError, match="pattern task must be none or balanced"):
            TrainConfig(task="pattern", class_weights=bad)
    assert TrainConfig(task="pattern", class_weights="Balanced").class_weights == "balanced"
