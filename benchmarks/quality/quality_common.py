"""What the quality benchmarks share: data paths, the --budget knob, the machine record, tables, JSON,
genoformer - baseline differences and the mean and range over seeds.

Every import of genoformer's training and checkpoint API by the quality scripts goes through here
(TrainConfig, train, load_checkpoint, batch_inputs, model_options, with_options, model_forward), so a
move of those names is fixed in one place.

--budget is either training steps ("300", "300steps") or CPU-minutes of training ("6m", "6min"):
a minutes budget trains a few calibration steps first (their time per step, without validation)
and turns the minutes into steps, so every compared model runs the same number of steps.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import re
import statistics
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

from genoformer.evaluate.variants import json_safe
from genoformer.model.checkpoint import load_checkpoint  # re-exported for the scripts
from genoformer.model.heads import batch_inputs  # re-exported for the scripts
from genoformer.outputs import write_text
from genoformer.train import ModelConfig, TrainConfig, train
from genoformer.train.config import MODEL_OPTIONS

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT.parent / "shared" / "data"
CHR20 = DATA / "variant_chr20_na12878"
FASTA = CHR20 / "ucsc.hg19.chr20.unittest.fasta.gz"
BAM = CHR20 / "NA12878_S1.chr20.10_10p1mb.bam"
TRUTH = CHR20 / "test_nist.b37_chr20_100kbp_at_10mb.vcf.gz"
CONFIDENT = CHR20 / "test_nist.b37_chr20_100kbp_at_10mb.bed"
CPG_ISLANDS = DATA / "annotations_hg19" / "cpg_islands_hg19_ucsc.txt"
PROMOTERS = DATA / "genomic_benchmarks" / "human_nontata_promoters" / "sequences" / "test_human_nontata_promoters.csv"
RESULTS = ROOT / "benchmarks" / "results"
CALIBRATION_STEPS = 5


@dataclasses.dataclass(frozen=True)
class Budget:
    steps: int | None = None
    minutes: float | None = None

    def __str__(self) -> str:
        return f"{self.steps} steps" if self.steps is not None else f"{self.minutes:g} min"


def parse_budget(text: str) -> Budget:
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(steps?|m|min|minutes?)?\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"budget {text!r}: give steps (300) or minutes (6m)")
    value, unit = m.groups()
    if unit and unit.startswith("m"):
        return Budget(minutes=float(value))
    if "." in value or int(value) < 1:
        raise argparse.ArgumentTypeError(f"budget {text!r}: steps must be a positive integer")
    return Budget(steps=int(value))


def add_common_args(ap: argparse.ArgumentParser, name: str, budget: str, baselines: bool = True) -> None:
    ap.add_argument("--budget", type=parse_budget, default=parse_budget(budget),
                    help=f"training steps (300) or minutes (6m) per model (default {budget})")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: tiny models gain nothing from more on a shared CPU)")
    ap.add_argument("--seeds", type=parse_seeds, default=[0],
                    help="comma-separated seeds, each a full run (default 0; headline rows use 0,1,2)")
    if baselines:
        ap.add_argument("--baseline-only", action="store_true",
                        help="run the baselines alone (no genoformer training): the genoformer rows print '-'")
    ap.add_argument("--json", default=str(RESULTS / f"{name}.json"), help="write the results here")
    ap.add_argument("--keep", help="keep run folders and outputs in this folder (default: a temporary one)")


def add_model_args(ap: argparse.ArgumentParser, *, d_model: int, depth: int = 2, bucket_size: int = 32,
                   attention: str | None = "lsh", batch_size: int) -> None:
    """The model shape and optimiser options every quality script takes, with that script's defaults
    (attention None: the script chooses the attention itself, and --attention is not offered)."""
    ap.add_argument("--d-model", type=int, default=d_model)
    ap.add_argument("--depth", type=int, default=depth)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--bucket-size", type=int, default=bucket_size)
    ap.add_argument("--n-hashes", type=int, default=2)
    if attention is not None:
        ap.add_argument("--attention", default=attention)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=batch_size)


def model_options(args: argparse.Namespace, attention: str | None = None) -> ModelConfig:
    """The model section of a quality script's TrainConfig, from add_model_args's options."""
    return ModelConfig(d_model=args.d_model, depth=args.depth, heads=args.heads, bucket_size=args.bucket_size,
                       n_hashes=args.n_hashes, attention=attention or args.attention)


def model_forward(model, items: list[dict]) -> torch.Tensor:
    """A checkpoint's model on WindowDataset items (stacked into one batch): its per-base outputs [B, W, C]."""
    batch = {key: torch.stack([it[key] for it in items]) for key, value in items[0].items()
             if isinstance(value, torch.Tensor)}
    return model(**batch_inputs(batch, next(model.parameters()).device))


def parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(x) for x in text.split(",")]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise argparse.ArgumentTypeError(f"seeds {text!r}: give distinct integers >= 0, comma-separated (0,1,2)")
    return seeds


def with_options(config: TrainConfig, options: dict) -> TrainConfig:
    """`config` with the training options in `options` changed, model options (d_model, attention, ...) given
    flat (an unknown option is a UsageError naming it)."""
    values = dataclasses.asdict(config)
    model = values.pop("model") | {k: v for k, v in options.items() if k in MODEL_OPTIONS}
    return TrainConfig.from_dict(values | {k: v for k, v in options.items() if k not in MODEL_OPTIONS} |
                                 {"model": model})


def minus(a: float | None, b: float | None) -> float | None:
    """a - b, or None when either is missing or NaN (a score with nothing to score)."""
    if a is None or b is None or math.isnan(a) or math.isnan(b):
        return None
    return a - b


def spread(values: list[float]) -> dict:
    """Mean, min and max over seeds (NaN values are left out; all NaN gives None)."""
    kept = [v for v in values if v is not None and not math.isnan(v)]
    if not kept:
        return {"mean": None, "min": None, "max": None, "n": 0}
    return {"mean": statistics.fmean(kept), "min": min(kept), "max": max(kept), "n": len(kept)}


def check_data(*paths: Path) -> None:
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise SystemExit(f"real data not found: {', '.join(missing)} (../shared/data beside the checkout)")


def work_dir(keep: str | None) -> tempfile.TemporaryDirectory | None:
    """A temporary folder, or None when --keep names one (created here)."""
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        return None
    return tempfile.TemporaryDirectory(prefix="genoformer-quality-")


@dataclasses.dataclass
class Measurement:
    """One seed of one benchmark: genoformer's score and each baseline's on the same data, same metric.

    The first baseline is the headline one (the strongest plain method the benchmark runs)."""
    metric: str
    genoformer: float | None
    baselines: dict[str, float | None]
    higher_is_better: bool = True
    detail: dict = dataclasses.field(default_factory=dict)  # anything else worth keeping in the JSON
    also: list[Measurement] = dataclasses.field(default_factory=list)  # secondary metrics, summarised after

    def differences(self) -> dict[str, float | None]:
        return {name: minus(self.genoformer, score) for name, score in self.baselines.items()}


def summary_rows(runs: list[Measurement], model: str = "genoformer") -> list[dict]:
    """genoformer, each baseline, and genoformer - each baseline (paired by seed): mean, min, max over seeds."""
    rows = [{"row": model, **spread([r.genoformer for r in runs])}]
    rows += [{"row": name, **spread([r.baselines[name] for r in runs])} for name in runs[0].baselines]
    rows += [{"row": f"{model} - {name}", **spread([r.differences()[name] for r in runs])}
             for name in runs[0].baselines]
    return rows


def print_summary(runs: list[Measurement], seeds: list[int], model: str = "genoformer") -> dict[str, list[dict]]:
    """Print the summary of the headline metric, then of each secondary one; return {metric: rows}."""
    out = {}
    for metric_runs in [runs] + [[r.also[i] for r in runs] for i in range(len(runs[0].also))]:
        rows = summary_rows(metric_runs, model)
        better = "higher" if metric_runs[0].higher_is_better else "lower"
        print(f"{metric_runs[0].metric} ({better} is better) over seeds {', '.join(map(str, seeds))}")
        print(table(rows, [("row", "", ""), ("n", "seeds", "d"), ("mean", "mean", ".4f"), ("min", "min", ".4f"),
                           ("max", "max", ".4f")]))
        out[metric_runs[0].metric] = rows
    return out


def steps_for(budget: Budget, config: TrainConfig, scratch: Path) -> tuple[int, float | None]:
    """(steps, calibrated seconds per step or None) for `config` under `budget`.

    Calibration trains CALIBRATION_STEPS steps of the same model and batch without validation;
    the first step's setup is included, so the estimate errs on the short side.
    """
    if budget.steps is not None:
        return budget.steps, None
    probe = dataclasses.replace(config, max_steps=CALIBRATION_STEPS, stop_after=None, val_regions=None,
                                val_fraction=0.0 if config.task == "classify" else config.val_fraction,
                                out=str(scratch / f"calibrate-{time.monotonic_ns()}"), progress=False)
    seconds = train(probe)["seconds"] / CALIBRATION_STEPS
    return max(1, int(budget.minutes * 60 / seconds)), seconds


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    memory = None
    try:
        kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
        memory = round(kb / 2 ** 20, 1)
    except (OSError, StopIteration):
        pass
    try:  # the code measured: the working tree may hold others' uncommitted changes ("-dirty")
        commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": commit, "cpu": cpu,
            "cores": os.cpu_count(), "memory_gib": memory, "load_average": os.getloadavg()[0],
            "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version()}


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Fixed-width text table; columns are (key, heading, format spec); None prints as '-'."""
    def cell(row: dict, key: str, spec: str) -> str:
        value = row.get(key)
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)

    cells = [[heading for _, heading, _ in columns]] + [[cell(r, k, s) for k, _, s in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    text = [spec == "" for _, _, spec in columns]  # text left, numbers right
    lines = ["  ".join(c[i].ljust(widths[i]) if text[i] else c[i].rjust(widths[i]) for i in range(len(columns)))
             for c in cells]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def save_json(path: str, result: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(json_safe(result), indent=2, default=str) + "\n")
    print(f"results: {path}")
