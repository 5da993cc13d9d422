"""A full disk (RELIABILITY F3, E5) through the real `genoformer` process, on a real small file system.

HDF5 caches what it writes, so no space shows only at a flush or close; a failed close used to leave
HDF5 retrying at interpreter exit and the process died with SIGSEGV. Every writing command must end
with exit 4 and one line naming its output, and leave nothing that looks complete.
"""
from __future__ import annotations

import re
import signal
from pathlib import Path

import pytest

from cli.conftest import PREDICTED
from cli.test_bad_inputs import assert_clean_failure, run_cli


def assert_full_disk_failure(proc, output: Path) -> None:
    assert proc.returncode not in (-signal.SIGSEGV, 128 + signal.SIGSEGV), "segfault: " + proc.stderr[-2000:]
    assert_clean_failure(proc, 4, re.escape(str(output)), "No space left on device")


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_predict_on_a_full_disk(small_disk, tiny_variant_model, chr20):
    disk = small_disk("64k")
    out = disk / "sample.h5"
    proc = run_cli("predict", "--model", tiny_variant_model, "--reference", chr20["fasta"], "--bam", chr20["bam"],
                   "--region", PREDICTED, "--out", out, "--no-progress")
    assert_full_disk_failure(proc, out)
    assert files_in(disk) == []  # neither the output nor its partial


@pytest.mark.parametrize("size", ["16k", "64k"])  # fails creating the file / writing its chunks
def test_merge_on_a_full_disk(small_disk, tiny_predictions, size):
    disk = small_disk(size)
    out = disk / "merged.h5"
    proc = run_cli("merge", tiny_predictions, "--out", out, "--no-progress")
    assert_full_disk_failure(proc, out)
    assert files_in(disk) == []


@pytest.mark.parametrize("size, failing", [("32k", "buckets.h5"), ("128k", "buckets.bed")])
def test_buckets_on_a_full_disk(small_disk, tiny_variant_model, chr20, size, failing):
    """With 128k, buckets.h5 fits but buckets.bed does not: a failed run leaves none of its files."""
    disk = small_disk(size)
    out = disk / "buckets"
    proc = run_cli("buckets", "--model", tiny_variant_model, "--reference", chr20["fasta"], "--bam", chr20["bam"],
                   "--region", "chr20:10,000,001-10,001,536", "--no-plots", "--out", out)
    assert_full_disk_failure(proc, out / failing)
    assert files_in(disk) == []


def test_export_on_a_full_disk(small_disk, tiny_predictions):
    disk = small_disk("16k")
    out = disk / "p.bedgraph"
    proc = run_cli("export", tiny_predictions, "--bedgraph", out, "--class", "het", "--digits", "4", "--no-progress")
    assert_full_disk_failure(proc, out)
    assert files_in(disk) == []


def test_train_on_a_full_disk(small_disk, chr20):
    """E5: the checkpoint does not fit. The run folder may hold its config, never a checkpoint."""
    disk = small_disk("64k")
    out = disk / "run"
    proc = run_cli("train", "--reference", chr20["fasta"], "--train-regions", "chr20:10,000,001-10,100,000",
                   "--window", 512, "--k", 3, "--d-model", 64, "--depth", 2, "--heads", 2, "--attention", "full",
                   "--batch-size", 2, "--max-steps", 2, "--no-progress", "--out", out)
    assert proc.returncode not in (-signal.SIGSEGV, 128 + signal.SIGSEGV), proc.stderr[-2000:]
    assert_clean_failure(proc, 4, "No space left on device")
    assert not any("checkpoints/step-" in name and not name.startswith(".") for name in files_in(disk))
