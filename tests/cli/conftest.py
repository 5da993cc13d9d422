"""Fixtures of the CLI reliability tests: a real small predictions file, and a small file system."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PREDICTED = "chr20:10,000,001-10,030,000"  # 30 kb: ~230 kB of predictions, a few seconds with the tiny model


@pytest.fixture(scope="session")
def tiny_predictions(tiny_variant_model, chr20, tmp_path_factory) -> Path:
    """A complete predictions file, written by `predict` with the tiny variant model over PREDICTED."""
    import torch

    from genoformer.predict.runner import PredictConfig, predict

    out = tmp_path_factory.mktemp("predictions") / "tiny.h5"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        predict(PredictConfig(model=str(tiny_variant_model), reference=str(chr20["fasta"]), bam=str(chr20["bam"]),
                              regions=[PREDICTED], out=str(out), progress=False))
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture
def small_disk(tmp_path):
    """mount(size, *options) -> a folder on a fresh tmpfs of that size ("64k"; options such as "ro"),
    unmounted after the test.

    Mounting needs root (or CAP_SYS_ADMIN); where it is refused, as on most CI runners, the test is
    skipped with the reason. A monkeypatched write would not do: the failures tested here are those
    of HDF5 and htslib writing through their own C code.
    """
    mounted: list[Path] = []

    def mount(size: str, *options: str) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        if shutil.which("mount") is None:
            pytest.skip("no `mount` command here to make a small tmpfs")
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs needs root (or CAP_SYS_ADMIN); not available here")
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs", str(where)],
                              capture_output=True, text=True)
        if proc.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip() or proc.returncode}")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)
