"""The run folder under real processes: an interrupt keeps the work and says how to continue (the resumed
losses equal an uninterrupted run's), timed checkpoints, one training process per folder, pointers that
cannot leave the run, and a finished run left as it is."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genoformer.errors import CheckpointError
from genoformer.model.checkpoint import resolve
from genoformer.train import train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from test_bad_inputs import assert_clean_failure  # noqa: E402
from test_loop import cli_args, mlm_config, run_cli, train_losses  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
CLI_MODEL = dict(stem=True, decoder=True)  # cli_args trains the CLI's default model: per-base stem and decoder


def start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "genoformer", *map(str, args)], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def logged_steps(run: Path) -> set[int]:
    """Training steps metrics.csv logs so far (read while the run appends to it)."""
    try:
        rows = [line.split(",") for line in (run / "metrics.csv").read_text().splitlines()[1:]]
    except FileNotFoundError:
        return set()
    return {int(r[0]) for r in rows if len(r) == 4 and r[1:3] == ["train", "loss"] and r[3]}


def wait_for_steps(run: Path, n: int, proc: subprocess.Popen, timeout: float = 90) -> None:
    """Until metrics.csv logs training step `n` (the process is then inside step n + 1 or after it)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if n in logged_steps(run):
            return
        time.sleep(0.01)
    raise AssertionError(f"step {n} never logged (exit {proc.poll()}): {proc.stderr.read() if proc.poll() else ''}")


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_an_interrupt_at_a_random_step_saves_a_checkpoint_that_resumes_exactly(chr20, tmp_path, sig, code):
    steps = ["--max-steps", 14, "--batch-size", 2, "--ckpt-every", 100]  # no checkpoint before the last step
    full = train(mlm_config(chr20, tmp_path / "full", max_steps=14, batch_size=2, ckpt_every=100,
                             **CLI_MODEL))["losses"]
    at = random.Random().randint(1, 10)
    run = tmp_path / "stopped"
    proc = start(*cli_args(chr20, run, *steps))
    wait_for_steps(run, at, proc)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == code, stderr
    stopped = max(train_losses(run))
    assert at <= stopped < 14, "the run finished before the signal"
    assert resolve(run).name == f"step-{stopped:08d}"  # the work up to the signal is kept
    assert f"genoformer train --resume {run}" in stderr and "Traceback" not in stderr
    done = run_cli("train", "--resume", run, "--no-progress")
    assert done.returncode == 0, done.stderr
    resumed = {int(s): v for s, v in json.loads((run / "summary.json").read_text())["losses"].items()}
    assert resumed == {s: full[s] for s in range(stopped + 1, 15)}  # bitwise, step for step
    assert train_losses(run) == train_losses(tmp_path / "full")  # and the log holds every step once


def test_an_interrupt_right_at_the_start_is_resumable(chr20, tmp_path):
    train(mlm_config(chr20, tmp_path / "full", max_steps=20, **CLI_MODEL))
    run = tmp_path / "stopped"
    proc = start(*cli_args(chr20, run, "--max-steps", 20))
    deadline = time.time() + 60
    while not (run / "config.json").is_file() and time.time() < deadline:  # written just before step 1
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert (run / "checkpoints" / "latest.json").is_file(), stderr
    assert run_cli("train", "--resume", run, "--no-progress").returncode == 0
    assert train_losses(run) == train_losses(tmp_path / "full")


def test_timed_checkpoints_let_a_killed_run_resume(chr20, tmp_path):
    train(mlm_config(chr20, tmp_path / "full", max_steps=8, batch_size=2, **CLI_MODEL))
    run = tmp_path / "killed"
    # ckpt-every 100 never fires in 8 steps: every checkpoint before the end is a timed one
    proc = start(*cli_args(chr20, run, "--max-steps", 8, "--batch-size", 2, "--ckpt-every", 100,
                           "--ckpt-minutes", 1e-6))
    latest = run / "checkpoints" / "latest.json"
    deadline = time.time() + 90
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and json.loads(latest.read_text())["checkpoint"] >= "step-00000003":
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert run_cli("train", "--resume", run, "--no-progress").returncode == 0
    assert train_losses(run) == train_losses(tmp_path / "full")


def test_two_trainings_into_one_folder(chr20, tmp_path):
    run = tmp_path / "run"
    first = start(*cli_args(chr20, run, "--max-steps", 400, "--seed", 1))
    wait_for_steps(run, 1, first)
    second = run_cli(*cli_args(chr20, run, "--max-steps", 2, "--seed", 2))
    assert_clean_failure(second, 4, "another genoformer train", f"PID {first.pid}")
    resumed = run_cli("train", "--resume", run)  # nor may anyone resume it meanwhile
    assert_clean_failure(resumed, 4, "another genoformer train")
    first.send_signal(signal.SIGINT)
    first.communicate(timeout=60)
    assert json.loads((run / "config.json").read_text())["seed"] == 1  # the first run's files only
    again = run_cli(*cli_args(chr20, run, "--max-steps", 2, "--seed", 2))
    assert_clean_failure(again, 4, "already holds a training run")


def test_a_killed_run_without_a_checkpoint_is_not_silently_replaced(chr20, tmp_path):
    run = tmp_path / "run"
    proc = start(*cli_args(chr20, run, "--max-steps", 400))
    wait_for_steps(run, 1, proc)
    proc.send_signal(signal.SIGKILL)  # no interrupt handler runs: no checkpoint
    proc.wait()
    assert not (run / "checkpoints" / "latest.json").exists()
    assert_clean_failure(run_cli(*cli_args(chr20, run, "--max-steps", 2)), 4, "stopped before its first checkpoint")
    assert_clean_failure(run_cli("train", "--resume", run), 3, "no checkpoints/latest.json")


@pytest.fixture(scope="module")
def tiny_run(chr20, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    train(mlm_config(chr20, out, max_steps=2))
    return out


def test_a_pointer_must_name_a_checkpoint_of_its_own_run(chr20, tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    shutil.copytree(tiny_run, tmp_path / "other")
    pointer = run / "checkpoints" / "latest.json"
    for target in ("../../other/checkpoints/step-00000002", "step-00000099", 7, "../../../etc"):
        pointer.write_text(json.dumps({"checkpoint": target}))
        with pytest.raises(CheckpointError, match="latest.json.*points at"):
            resolve(run)
    # the last through both commands that read a run (one line, exit 3)
    for proc in (run_cli("train", "--resume", run),
                 run_cli("predict", "--model", run, "--reference", chr20["fasta"], "--out", tmp_path / "p.h5")):
        assert_clean_failure(proc, 3, "latest.json", "points at")


def test_resuming_a_finished_run_says_so_and_leaves_it(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"}
    proc = run_cli("train", "--resume", run)
    assert proc.returncode == 0, proc.stderr
    assert "finished at step 2 of 2" in proc.stderr
    assert json.loads(proc.stdout)["final_loss"] == json.loads(before["summary.json"])["final_loss"] is not None
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file() and p.name != ".lock"} == before
