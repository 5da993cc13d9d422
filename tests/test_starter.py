"""pipelines/starter.sh end to end with the shipped starter model (`--model starter-variant`): no training, an
example the model never saw (seed 0; it was trained on seed 7's genome), and calls that match the simulation's
truth, counted here with pysam and compared with what evaluate says."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pysam
import pytest

from genoformer import pretrained

SCRIPT = Path(__file__).resolve().parents[1] / "pipelines" / "starter.sh"
ENV = {"STARTER_PROGRESS": "0", "GENOFORMER": f"{sys.executable} -m genoformer", "OMP_NUM_THREADS": "1"}

pytestmark = pytest.mark.skipif("starter-variant" not in pretrained.names(),
                                reason="the starter model is not in this checkout (genoformer/pretrained/)")


@pytest.fixture(scope="module")
def starter(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("starter") / "st"
    proc = subprocess.run(["bash", str(SCRIPT), str(out)], env=os.environ | ENV, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_the_starter_model_calls_an_example_it_never_saw(starter):
    out, proc = starter
    scores = json.loads((out / "evaluation.json").read_text())
    # the example plants paralog reads and strand errors (simulate/reads.py): bcftools call's SNV precision there
    # is 0.91 (77 / 8 / 0, MODEL_CARD.md)
    assert scores["snv"]["recall"] >= 0.9 and scores["snv"]["precision"] >= 0.8, scores["snv"]
    assert scores["indel"]["recall"] >= 0.8, scores["indel"]
    assert "Starter done" in proc.stdout and "trained on simulated reads only" in proc.stdout
    # evaluate's true positives + false positives are the calls: counted here from the VCF itself
    with pysam.VariantFile(str(out / "calls.vcf.gz")) as vcf:
        records = [r for r in vcf if list(r.filter) in ([], ["PASS"])]
    called = sum(scores[k]["tp"] + scores[k]["fp"] for k in ("snv", "indel"))
    assert 0 < called <= sum(len(r.alts) for r in records)
    assert (out / "predictions.h5").is_file() and (out / "calls.vcf.gz.tbi").is_file()


def test_the_starter_never_writes_into_a_used_folder(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    proc = subprocess.run(["bash", str(SCRIPT), str(tmp_path)], env=os.environ | ENV, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 4 and "is not empty" in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.txt"]
