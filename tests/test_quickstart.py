"""pipelines/quickstart.sh end to end (simulate -> train -> predict -> export -> evaluate) at CI size:
every output exists and is complete, the model it trains calls SNVs, the scores count exactly the truth
and calls inside the scored region (counted with pysam), the script says where everything is, and it
never writes into a used folder."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pysam
import pytest

from genoformer import read_predictions

SCRIPT = Path(__file__).resolve().parents[1] / "pipelines" / "quickstart.sh"
# CI size through the script's own settings: two short contigs and half the steps; the model and its
# training otherwise as a user runs it
# (chrA 60 kb: the simulated SNVs of 30 kb, two dozen, left a 30-step model at 8 of 13 held-out SNVs once
# the example planted strand errors; the steps, not the contig, set the training time)
SMALL = {"QUICKSTART_STEPS": "30", "QUICKSTART_CONTIGS": "chrA:60000 chrB:12000", "QUICKSTART_PROGRESS": "0",
         "GENOFORMER": f"{sys.executable} -m genoformer", "OMP_NUM_THREADS": "1"}


def run_quickstart(out: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), str(out)], env=os.environ | SMALL | env, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("quickstart") / "qs"
    proc = run_quickstart(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def _alleles_in(vcf_path: Path, contig: str, scored: list[tuple[int, int]]) -> int:
    """Non-reference SNV and deletion/insertion alleles of `contig` whose span lies in one scored interval,
    counted independently of genoformer (pysam only; trims shared bases like evaluate does)."""
    n = 0
    with pysam.VariantFile(str(vcf_path)) as vcf:
        sample = list(vcf.header.samples)[0]
        for rec in vcf.fetch(contig):
            if list(rec.filter) not in ([], ["PASS"]):
                continue
            gt = rec.samples[sample]["GT"]
            for i in sorted({a for a in gt if a}):
                ref, alt, start = rec.ref, rec.alts[i - 1], rec.start
                while len(ref) > 1 and len(alt) > 1 and ref[-1] == alt[-1]:
                    ref, alt = ref[:-1], alt[:-1]
                while len(ref) > 1 and len(alt) > 1 and ref[0] == alt[0]:
                    ref, alt, start = ref[1:], alt[1:], start + 1
                if len(ref) == len(alt):  # SNV (or MNP: one allele per changed base)
                    spans = [(start + j, start + j + 1) for j in range(len(ref)) if ref[j] != alt[j]]
                elif len(ref) > len(alt):  # deletion: the deleted bases
                    spans = [(start + len(alt), start + len(ref))]
                else:  # insertion: the two bases around it
                    spans = [(start + len(ref) - 1, start + len(ref) + 1)]
                n += sum(any(s <= a and b <= e for s, e in scored) for a, b in spans)
    return n


def test_quickstart_writes_every_output_complete(quickstart):
    out, proc = quickstart
    ex = out / "example"
    chrb = pysam.FastaFile(str(ex / "reference.fa")).get_reference_length("chrB")
    assert chrb == 12000

    preds = read_predictions(out / "predictions.h5", "chrB")  # refuses an incomplete file
    assert preds.classes == ["hom_ref", "snv_het", "snv_hom_alt", "insertion_het", "insertion_hom_alt",
                             "deletion_het", "deletion_hom_alt"]
    assert preds.covered.all() and preds.probs.shape == (chrb, 7)
    np.testing.assert_allclose(preds.probs.sum(axis=1), 1, atol=5e-3)  # float16 storage

    calls = out / "calls.vcf.gz"
    assert (out / "calls.vcf.gz.tbi").is_file()
    with pysam.VariantFile(str(calls)) as vcf:
        assert list(vcf.header.contigs) == ["chrA", "chrB"]
        records = list(vcf)
    exported = json.loads((out / "export-summary.json").read_text())["vcf"]
    assert len(records) == exported["records"]
    assert {r.contig for r in records} <= {"chrB"}  # only the held-out contig was predicted

    scores = json.loads((out / "evaluation.json").read_text())
    for kind in ("snv", "indel", "all"):
        assert {"tp", "fp", "fn", "precision", "recall", "f1"} <= set(scores[kind])
    confident = [(int(f[1]), int(f[2])) for f in
                 (line.split("\t") for line in (ex / "confident.bed").read_text().splitlines()) if f[0] == "chrB"]
    truth_alleles = _alleles_in(ex / "truth.vcf.gz", "chrB", confident)
    called_alleles = _alleles_in(calls, "chrB", confident)
    assert truth_alleles > 0
    assert scores["all"]["tp"] + scores["all"]["fn"] == truth_alleles
    assert scores["all"]["tp"] + scores["all"]["fp"] == called_alleles

    train = json.loads((out / "train-summary.json").read_text())
    assert train["step"] == 30 and Path(train["checkpoint"]).is_dir()
    config = json.loads((out / "variant-run" / "config.json").read_text())
    assert config["class_weights"] == "balanced" and config["k"] == 1 and config["val_regions"] == ["chrB"]
    assert config["val_windows"] == -(-chrb // config["window"])  # all of chrB is validated


def test_quickstart_trains_a_model_that_calls_snvs(quickstart):
    out, _ = quickstart
    snv = json.loads((out / "evaluation.json").read_text())["snv"]
    assert snv["tp"] + snv["fn"] >= 8  # the held-out contig's planted SNVs (inside the confident regions)
    # an untrained model calls every base where a read differs (precision ~0.2); this one learnt genotypes
    assert snv["precision"] >= 0.8 and snv["recall"] >= 0.7, snv


def test_quickstart_says_where_outputs_are(quickstart):
    out, proc = quickstart
    assert "Quickstart done. Outputs in" in proc.stdout
    for name in ("example/", "variant-run/", "predictions.h5", "calls.vcf.gz", "evaluation.json"):
        assert name in proc.stdout
    scores = json.loads((out / "evaluation.json").read_text())
    f1 = scores["snv"]["f1"]
    assert f"SNV   precision" in proc.stdout and ("-" if f1 is None else f"{f1:.3f}") in proc.stdout
    assert "recall" in proc.stdout and "F1" in proc.stdout
    # every step announced on stderr, and the evaluation table on stdout
    assert [line for line in proc.stderr.splitlines() if line.startswith("== ")][-1].startswith("== 5/5 evaluate")
    assert "SNV" in (out / "evaluation.txt").read_text()


def test_quickstart_refuses_a_used_folder(quickstart):
    out, _ = quickstart
    before = sorted(p.name for p in out.iterdir())
    proc = run_quickstart(out)
    assert proc.returncode == 4
    assert proc.stderr.strip().count("\n") == 0 and "not empty" in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == before


def test_quickstart_usage():
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("usage:")
