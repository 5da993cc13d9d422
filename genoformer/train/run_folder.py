"""The run folder's files besides the checkpoints: config.json, metrics.csv and summary.json.

metrics.csv has one row per (step, split, metric, value), appended as the run goes; a resumed run
first drops what the interrupted one logged after its checkpoint. config.json and summary.json are
replaced atomically.
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

from genoformer.errors import OutputError
from genoformer.model import checkpoint as ckpt
from genoformer.outputs import write_bytes
from genoformer.train.config import TrainConfig

METRICS_HEADER = ["step", "split", "metric", "value"]


def check_fresh(out: str) -> None:
    """OutputError if `out` already holds a training run."""
    if ckpt.read_pointer(out) is not None:
        raise OutputError(f"{out}: already holds a training run",
                          hint="continue it with --resume, or give another --out")


def write_config(out: Path, config: TrainConfig) -> None:
    _write_json(out / "config.json", dataclasses.asdict(config))


def write_summary(out: Path, summary: dict) -> None:
    _write_json(out / "summary.json", summary)


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
