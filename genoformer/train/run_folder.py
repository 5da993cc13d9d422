"""The run folder's files besides the checkpoints: config.json, metrics.csv and summary.json, and its lock.

metrics.csv has one row per (step, split, metric, value), appended as the run goes; a resumed run
first drops what the interrupted one logged after its checkpoint. config.json and summary.json are
replaced atomically. One process at a time trains into a folder: it holds an flock on RUN/.lock
(released by the kernel however the process ends), so a second `train` or `--resume` is refused
instead of interleaving its files with the first's.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

from genoformer.errors import OutputError
from genoformer.model import checkpoint as ckpt
from genoformer.outputs import write_bytes
from genoformer.train.config import TrainConfig

METRICS_HEADER = ["step", "split", "metric", "value"]
CONFIG, METRICS, SUMMARY, LOCK = "config.json", "metrics.csv", "summary.json", ".lock"
RUN_FILES = (CONFIG, METRICS, SUMMARY, "checkpoints")  # what a run writes (training.png aside)


def check_fresh(out: str | os.PathLike) -> None:
    """OutputError if `out` already holds a training run, finished, resumable or stopped before its first
    checkpoint."""
    out = Path(out)
    if (out / "checkpoints" / ckpt.LATEST).exists():
        raise OutputError(f"{out}: already holds a training run",
                          hint=f"continue it with `genoformer train --resume {out}`, or give another --out")
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found:
        raise OutputError(f"{out}: holds a training run that stopped before its first checkpoint ({found[0]}); "
                          "there is nothing to resume", hint=f"delete it (rm -r {out}) or give another --out")


@contextlib.contextmanager
def locked(out: str | os.PathLike) -> Iterator[Path]:
    """Hold the run folder's lock for the block (creating the folder); OutputError if another process holds it.

    A folder this call created is removed again when the block fails before writing anything into it.
    """
    out = Path(out)
    created = not out.exists()
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise OutputError(f"{out}: cannot create or lock the run folder ({e.strerror or e})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise OutputError(f"{out}: another genoformer train (PID {holder}) is writing this run folder",
                              hint="wait for it to finish, or give another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield out
        except BaseException:
            if created and [p.name for p in out.iterdir()] == [LOCK]:
                shutil.rmtree(out, ignore_errors=True)
            raise
    finally:
        os.close(fd)


def write_config(out: Path, config: TrainConfig) -> None:
    _write_json(out / CONFIG, dataclasses.asdict(config))


def write_summary(out: Path, summary: dict) -> None:
    _write_json(out / SUMMARY, summary)


def read_summary(out: Path) -> dict | None:
    """summary.json of a finished run; None when it is missing or unreadable."""
    try:
        summary = json.loads((out / SUMMARY).read_text())
    except (OSError, ValueError):
        return None
    return summary if isinstance(summary, dict) else None


def _write_json(path: Path, values: dict) -> None:
    write_bytes(path, (json.dumps(values, indent=2, default=str) + "\n").encode())


def append_metrics(path: Path, rows: list[tuple]) -> None:
    new = not path.is_file()
    with path.open("a", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(METRICS_HEADER)
        writer.writerows(rows)


def truncate_metrics(path: Path, keep_until: int) -> None:
    """Drop the rows after step `keep_until` (and any row a kill cut short)."""
    old = list(csv.reader(path.open())) if path.is_file() else [METRICS_HEADER]
    kept = [r for r in old[1:] if len(r) == 4 and r[0].isdigit() and int(r[0]) <= keep_until]
    write_bytes(path, ("\n".join(",".join(r) for r in [old[0], *kept]) + "\n").encode())


def logged_loss(path: Path, step: int) -> float | None:
    """The training loss metrics.csv holds for `step` (a run resumed at its end computes none itself)."""
    if not path.is_file():
        return None
    rows = [r for r in csv.reader(path.open()) if r[:3] == [str(step), "train", "loss"] and len(r) == 4]
    try:
        return float(rows[-1][3]) if rows else None
    except ValueError:
        return None
