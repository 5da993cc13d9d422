"""What a run says before and while it trains, through the real command with stderr a pipe: the labels it
learns from (and a refusal when they hold no positive), plain progress lines, one line per validation,
training.png, the metric summary.json picked the best checkpoint on, the window clipped to the longest
region, the task's defaults, and the estimated time per step with a warning when a CPU run takes hours."""
from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import pysam
import pytest

from genoformer.io.variant_classes import VARIANT_CLASSES
from genoformer.simulate.genome import simulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_bad_inputs import assert_clean_failure  # noqa: E402
from test_class_weights import pysam_counts  # noqa: E402
from test_loop import run_cli  # noqa: E402

TINY_MODEL = ["--d-model", 16, "--depth", 1, "--heads", 2, "--attention", "local", "--bucket-size", 32]


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("feedback") / "example", 3, contigs=(("chrA", 20000), ("chrB", 12000)))


def variant_args(example, out, *extra) -> list:
    return ["train", "--task", "variant", "--reference", example.reference, "--bam", example.reads,
            "--truth-vcf", example.truth_vcf, "--confident-bed", example.confident_bed, "--train-regions", "chrA",
            "--val-regions", "chrB", *TINY_MODEL, "--out", out, *extra]


def val_rows(run: Path) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for row in csv.DictReader((run / "metrics.csv").open()):
        if row["split"] == "val":
            out.setdefault(row["metric"], {})[int(row["step"])] = float(row["value"])
    return out


def test_a_run_reports_its_labels_progress_and_validation_and_draws_its_curves(example, tmp_path):
    run = tmp_path / "run"
    proc = run_cli(*variant_args(example, run, "--window", 1024, "--val-windows", 12, "--max-steps", 6, "--val-every", 3,
                                 "--batch-size", 2))  # progress on (the default), stderr a pipe
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr  # plain lines, no terminal frames
    # the label counts, as a pysam count of the truth gives them
    for split, contig, length in (("training regions", "chrA", 20000), ("validation windows", "chrB", 12000)):
        counts = pysam_counts(example.truth_vcf, example.confident_bed, contig, length)
        assert f"labels, {split} ({contig}:1-" in proc.stderr
        shown = ", ".join(f"{name} {n:,}" for name, n in zip(VARIANT_CLASSES, counts))
        assert f"{shown} scored bases" in proc.stderr
    assert re.search(r"^step 6/6 \(100%\)  loss \d\.\d{4}  lr ", proc.stderr, re.M), proc.stderr
    logged = val_rows(run)
    for step in (3, 6):
        line = next(ln for ln in proc.stderr.splitlines() if f"validation at step {step}:" in ln)
        for name in ("loss", "precision", "recall", "f1"):
            value = logged[name][step]
            assert re.search(rf"\b{name} ({value:.4g}|nan)\b", line), (name, value, line)
    best = json.loads((run / "summary.json").read_text())["best"]
    assert best["name"] == "f1"
    picture = run / "training.png"
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from matplotlib.image import imread

    assert imread(picture).shape[0] > 200  # a real picture, two panels


def test_pattern_runs_pick_the_best_checkpoint_on_auroc(example, tmp_path):
    run = tmp_path / "pattern"
    proc = run_cli("train", "--task", "pattern", "--reference", example.reference, "--train-regions", "chrA",
                   "--val-regions", "chrB", "--val-windows", 24, "--window", 512, "--k", 3, *TINY_MODEL,
                   "--max-steps", 8, "--val-every", 2, "--batch-size", 2, "--lr", 3e-3, "--no-progress", "--out", run)
    assert proc.returncode == 0, proc.stderr
    auroc = val_rows(run)["auroc"]
    best = json.loads((run / "summary.json").read_text())["best"]
    top = max(auroc.values())
    assert best["name"] == "auroc" and best["metric"] == pytest.approx(top, rel=1e-5)
    assert best["step"] == min(s for s, v in auroc.items() if v == top)
    assert json.loads((run / "checkpoints" / "best.json").read_text())["checkpoint"] == f"step-{best['step']:08d}"


def _lowqual_copy(vcf: Path, out: Path) -> Path:
    """The truth VCF with every record's FILTER set to LowQual, bgzipped and indexed."""
    with pysam.VariantFile(str(vcf)) as src:
        header = src.header.copy()
        header.add_meta("FILTER", items=[("ID", "LowQual"), ("Description", "low quality")])
        plain = out.with_suffix("")
        with pysam.VariantFile(str(plain), "w", header=header) as dst:
            for rec in src:
                copy = dst.new_record(contig=rec.contig, start=rec.start, stop=rec.stop, alleles=rec.alleles,
                                      filter="LowQual")
                copy.samples[0]["GT"] = rec.samples[0]["GT"]
                dst.write(copy)
    pysam.tabix_index(str(plain), preset="vcf", force=True)
    return out


def test_a_truth_set_with_no_passing_record_is_refused_naming_why(example, tmp_path):
    lowqual = _lowqual_copy(example.truth_vcf, tmp_path / "lowqual.vcf.gz")
    n_records = sum(1 for _ in pysam.VariantFile(str(lowqual)).fetch("chrA"))
    args = variant_args(example, tmp_path / "run", "--max-steps", 2)
    args[args.index("--truth-vcf") + 1] = lowqual
    proc = run_cli(*args)
    assert_clean_failure(proc, 3, "lowqual.vcf.gz: no het or hom_alt base to learn from in the training regions",
                         f"of its {n_records} records there, {n_records} fail FILTER", "LowQual")
    assert not (tmp_path / "run").exists()


def test_validation_windows_without_a_variant_are_refused(example, tmp_path):
    with pysam.VariantFile(str(example.truth_vcf)) as vcf:
        sites = sorted(rec.start for rec in vcf.fetch("chrB"))
    gaps = [(a, b) for a, b in zip([200, *sites], [*sites, 11800]) if b - a > 700]
    start, end = gaps[0][0] + 100, gaps[0][0] + 600  # 500 bases, no truth record near
    args = variant_args(example, tmp_path / "run", "--max-steps", 2)
    args[args.index("--val-regions") + 1] = f"chrB:{start + 1}-{end}"
    proc = run_cli(*args)
    assert_clean_failure(proc, 3, "truth.vcf.gz: no het or hom_alt base to learn from in the validation windows",
                         "the VCF has no records there")


def test_the_window_is_clipped_and_the_task_defaults_and_time_are_in_the_dry_run(example, tmp_path):
    proc = run_cli(*variant_args(example, tmp_path / "run", "--dry-run"))  # default window: 1,000,000
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    config = report["config"]
    assert config["window"] == 20000 and "using window 20,000" in proc.stderr  # chrA, the longest region
    assert (config["k"], config["class_weights"]) == (1, "balanced")  # the variant task's defaults
    estimate = report["estimate"]
    assert estimate["seconds_per_step"] > 0 and estimate["steps"] == 1000
    assert estimate["seconds"] == pytest.approx(estimate["seconds_per_step"] * 1000)
    assert "estimated time per step ~" in proc.stderr
    assert ("would take ~" in proc.stderr) == (estimate["seconds"] > 3600)
    assert not (tmp_path / "run").exists()


def test_a_cpu_run_that_would_take_hours_names_the_cpu_recipe(example, tmp_path):
    proc = run_cli(*variant_args(example, tmp_path / "run", "--max-steps", 1_000_000, "--device", "cpu",
                                 "--dry-run"))
    assert proc.returncode == 0, proc.stderr
    warning = next(ln for ln in proc.stderr.splitlines() if "would take ~" in ln)
    assert "pipelines/variant-cpu.yaml" in warning and "h on the CPU" in warning
    assert Path(__file__).resolve().parents[2].joinpath("pipelines", "variant-cpu.yaml").is_file()
