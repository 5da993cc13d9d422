"""benchmarks/gpu_check.py, the one command a GPU machine runs: its dry run on this CPU goes through every part
(pytest -m gpu, the recipe's training step, LSH vs local vs full, predict over a simulated contig) at a tiny size."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_dry_run_on_the_cpu_runs_every_part_and_writes_the_table_and_json(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--dry-run", "--peak-tflops", "2",
                           "--json", str(out)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = proc.stdout.splitlines()
    assert [line.split()[0] for line in table[2:-1]] == ["tests"] + ["train"] * 2 + ["attention"] * 6 + ["predict"] * 2
    results = json.loads(out.read_text())
    assert results["env"]["device"] == "cpu" and results["sizes"]["dry_run"]
    if not torch.cuda.is_available():  # every test marked gpu was collected and skipped, none failed
        assert set(results["tests"]["counts"]) == {"skipped"} and results["tests"]["counts"]["skipped"] >= 10
    train = results["train"]
    assert train["tokens"] == train["window"] == 1024 and train["k"] == 1  # pipelines/variant.yaml: one token a base
    assert len(train["steps_s"]) == 2 and train["step_s"] > 0 and train["forward_s"] > 0
    assert math.isclose(train["mfu"], train["flops"] / train["step_s"] / 2e12)
    assert [(r["attention"], r["tokens"]) for r in results["attention"]] == \
        [(kind, n) for n in (256, 512) for kind in ("lsh", "local", "full")]
    assert all(r["step_s"] > 0 and r["flops"] > 0 for r in results["attention"])
    predict = results["predict"]
    # the whole 12 kb contig, on the grid of 1,024-base windows kept in their middle half (step 512)
    assert predict["contig_bases"] == 12_000 and predict["margin"] == 256
    assert predict["windows"] == math.ceil((12_000 - 2 * 256) / 512)
    assert math.isclose(predict["genome_hours"], 3.1e9 / predict["bases_per_s"] / 3600)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_is_refused_before_any_work(tmp_path, capsys):
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert gpu_check.main(["--json", str(tmp_path / "never.json")]) == 2
    assert capsys.readouterr().err.startswith("error: device cuda requested but no CUDA GPU is available")
    assert not (tmp_path / "never.json").exists()
