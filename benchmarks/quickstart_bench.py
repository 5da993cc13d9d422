"""The README's first command end to end: how long each stage takes, and the scores it ends with.

Runs `bash pipelines/quickstart.sh` (simulate, train, predict, export, evaluate) or, with --script
starter, `bash pipelines/starter.sh` (the shipped starter model: simulate, predict, export, evaluate)
into a temporary folder with its defaults (or settings given as --env NAME=VALUE) and times every
stage from the "== k/n" lines it prints on stderr. Wall
seconds depend on what else the machine runs; CPU seconds (user + system over all the stages'
processes) do not, and bound the wall time of an idle machine from above when the stages use at most
one core each on average. The load average before and after says how idle the machine was.

    python benchmarks/quickstart_bench.py [--script quickstart|starter] [--env QUICKSTART_STEPS=100 ...]
        [--json benchmarks/results/quickstart.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = {"quickstart": ROOT / "pipelines" / "quickstart.sh", "starter": ROOT / "pipelines" / "starter.sh"}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run(script: str, env: dict[str, str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / script
        load_before = os.getloadavg()
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        proc = subprocess.Popen(["bash", str(SCRIPTS[script]), str(out)], env=os.environ | env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, bufsize=1)
        stages, current, started = [], None, t0
        for line in proc.stderr:  # "== 2/5 train: ..." opens a stage; everything else is the stage's log
            if line.startswith("== "):
                now = time.perf_counter()
                if current is not None:
                    stages.append({"stage": current, "seconds": now - started})
                current, started = line[3:].split(":")[0], now
        stdout = proc.stdout.read()
        proc.wait()
        end = time.perf_counter()
        if current is not None:
            stages.append({"stage": current, "seconds": end - started})
        if proc.returncode != 0:
            sys.exit(f"{script} failed (exit {proc.returncode}):\n{stdout}")
        scores = json.loads((out / "evaluation.json").read_text())
        trained = {}
        if (out / "variant-run").is_dir():  # the starter trains nothing
            train = json.loads((out / "variant-run" / "summary.json").read_text())
            config = json.loads((out / "variant-run" / "config.json").read_text())
            trained = {"train_steps": train["step"], "train_seconds": train["seconds"],
                       "settings": {key: config[key] for key in ("window", "k", "batch_size", "max_steps", "lr",
                                                                 "class_weights")} | {"model": config["model"]}}
    return {"script": script, "wall_seconds": end - t0, "cpu_seconds": cpu_seconds() - cpu0, "stages": stages,
            "load_average_before": load_before, "load_average_after": os.getloadavg()} | trained | {
            "snv": {k: scores["snv"][k] for k in ("tp", "fp", "fn", "precision", "recall", "f1")},
            "indel": {k: scores["indel"][k] for k in ("tp", "fp", "fn", "precision", "recall", "f1")}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--script", choices=sorted(SCRIPTS), default="quickstart")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="a setting of the script (QUICKSTART_*, STARTER_*)")
    ap.add_argument("--json", help="also write the result here (e.g. benchmarks/results/quickstart.json)")
    args = ap.parse_args()
    env = dict(item.split("=", 1) for item in args.env)
    result = run(args.script, env | {"QUICKSTART_PROGRESS": "0", "STARTER_PROGRESS": "0"})
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    result |= {"env": env, "commit": commit.stdout.strip(), "date": time.strftime("%Y-%m-%d"),
               "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine(),
                           "python": platform.python_version(),
                           "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "(unset)")}}
    print(f"{'stage':<12}{'wall s':>8}")
    for stage in result["stages"]:
        print(f"{stage['stage']:<12}{stage['seconds']:>8.1f}")
    print(f"{'total':<12}{result['wall_seconds']:>8.1f}   CPU {result['cpu_seconds']:.1f} s; load average "
          f"{result['load_average_before'][0]:.1f} before, {result['load_average_after'][0]:.1f} after")
    for kind in ("snv", "indel"):
        s = result[kind]
        fmt = (lambda v: "-" if v is None else f"{v:.3f}")
        print(f"{kind.upper():<6} TP/FP/FN {s['tp']}/{s['fp']}/{s['fn']}  precision {fmt(s['precision'])}  "
              f"recall {fmt(s['recall'])}  F1 {fmt(s['f1'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
