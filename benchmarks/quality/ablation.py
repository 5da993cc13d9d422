"""Ablation harness: one quality benchmark over seeds and a grid of training options, against its baseline.

Each grid row is a dict of TrainConfig options (e.g. {"k": 1, "attention": "local"}) applied on top of
the benchmark's own model options; every row trains for the same number of steps (a minutes budget
is calibrated once, on the first row) with each seed, and prints the mean and range over seeds of
genoformer's score, the benchmark's headline baseline on the same data, and genoformer - baseline
(paired by seed). The grid is data:
- --vary NAME[,NAME...]: the product of the named option lists in OPTIONS (e.g. --vary k,attention
  gives 2 x 3 rows);
- --grid JSON: an explicit list of option dicts ('[{"k": 1}, {"k": 6, "attention": "full"}]'), or
  @FILE holding one.
An option TrainConfig does not know stops the run before anything trains, naming it (any model option
of train's, e.g. stem, decoder, evidence_scaling, rc_augment, k, attention).

Benchmarks: variant (the real setting of variant_quality.py), variant_simulated, classify, protein,
mlm, pattern. Every option of the chosen benchmark's script is accepted too (e.g. --window,
--class-weights for variant).

    python benchmarks/quality/ablation.py --benchmark variant --vary k,attention [--seeds 0,1,2]
        [--budget 300] [--k 1 --window 1024 --class-weights balanced] [--json PATH]
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
from pathlib import Path

import classify_quality
import mlm_quality
import pattern_quality
import protein_ss_quality
import torch
import variant_quality
from quality_common import (
    add_common_args,
    machine,
    save_json,
    spread,
    steps_for,
    summary_rows,
    table,
    work_dir,
)

from genoformer.errors import UsageError
from genoformer.io.evidence import EVIDENCE_SCALINGS

OPTIONS: dict[str, list] = {"k": [1, 6], "attention": ["lsh", "local", "full"], "stem": [False, True],
                            "decoder": [False, True], "rc_augment": [False, True],
                            "evidence_scaling": list(EVIDENCE_SCALINGS)}


@dataclasses.dataclass(frozen=True)
class Benchmark:
    add_args: object  # (ArgumentParser) -> None
    measure: object  # (args, folder, seed, options, steps) -> Measurement
    probe: object  # (args, folder, options) -> TrainConfig


BENCHMARKS = {
    "variant": Benchmark(variant_quality.add_args, variant_quality.measure_real, variant_quality.probe_config_real),
    "variant_simulated": Benchmark(variant_quality.add_args, variant_quality.measure_simulated,
                                   variant_quality.probe_config_simulated),
    "classify": Benchmark(classify_quality.add_args, classify_quality.measure, classify_quality.probe_config),
    "protein": Benchmark(protein_ss_quality.add_args, protein_ss_quality.measure, protein_ss_quality.probe_config),
    "mlm": Benchmark(mlm_quality.add_args, mlm_quality.measure, mlm_quality.probe_config),
    "pattern": Benchmark(pattern_quality.add_args, pattern_quality.measure, pattern_quality.probe_config),
}


def grid_from(vary: str | None, grid: str | None) -> list[dict]:
    """The option dicts of --vary or --grid (see the module docstring); [{}] (the script's own options) without either."""
    if vary and grid:
        raise UsageError("give --vary or --grid, not both")
    if vary:
        names = vary.split(",")
        unknown = [n for n in names if n not in OPTIONS]
        if unknown:
            raise UsageError(f"--vary {unknown[0]}: not an option to vary (known: {', '.join(OPTIONS)})")
        return [dict(zip(names, values)) for values in itertools.product(*(OPTIONS[n] for n in names))]
    if not grid:
        return [{}]
    text = Path(grid[1:]).read_text() if grid.startswith("@") else grid
    try:
        rows = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"--grid: not JSON ({e})") from None
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise UsageError("--grid: give a non-empty JSON list of option objects")
    return rows


def label(options: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in options.items()) or "script defaults"


def parser(benchmark: str | None) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS))
    ap.add_argument("--vary", help=f"comma-separated options to cross: {', '.join(OPTIONS)}")
    ap.add_argument("--grid", help="JSON list of option dicts, or @FILE")
    add_common_args(ap, f"ablation_{benchmark or 'BENCHMARK'}", "300")
    ap.set_defaults(seeds=[0, 1, 2])
    if benchmark in BENCHMARKS:
        BENCHMARKS[benchmark].add_args(ap)
    return ap


def parse(argv: list[str]) -> argparse.Namespace:
    first = argparse.ArgumentParser(add_help=False)
    first.add_argument("--benchmark")
    known, _ = first.parse_known_args(argv)
    ap = parser(known.benchmark)
    args = ap.parse_args(argv)
    try:
        args.grid_rows = grid_from(args.vary, args.grid)
    except (UsageError, OSError) as e:
        ap.error(str(e))
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(sys.argv[1:] if argv is None else argv)
    bench = BENCHMARKS[args.benchmark]
    torch.set_num_threads(args.threads)
    tmp = work_dir(args.keep)
    folder = Path(args.keep or tmp.name)
    try:
        try:  # every row's options are checked before anything trains
            probes = [bench.probe(args, folder, options) for options in args.grid_rows]
        except (UsageError, TypeError) as e:
            raise SystemExit(f"error: --grid/--vary: {e}") from None
        steps, per_step = (0, None) if args.baseline_only else steps_for(args.budget, probes[0], folder)
        results = [{"options": options, "runs": [bench.measure(args, folder, seed, options, steps)
                                                 for seed in args.seeds]} for options in args.grid_rows]
    finally:
        if tmp is not None:
            tmp.cleanup()
    first = results[0]["runs"][0]
    baseline = next(iter(first.baselines))
    rows = []
    for result in results:
        runs = result["runs"]
        model, base, diff = (spread(v) for v in ([r.genoformer for r in runs], [r.baselines[baseline] for r in runs],
                                                  [r.differences()[baseline] for r in runs]))
        result["summary"] = summary_rows(runs)
        rows.append({"options": label(result["options"]), "seeds": model["n"], "mean": model["mean"],
                     "min": model["min"], "max": model["max"], "baseline": base["mean"], "diff": diff["mean"],
                     "diff_min": diff["min"], "diff_max": diff["max"]})
    better = "higher" if first.higher_is_better else "lower"
    print(f"{args.benchmark}: {first.metric} ({better} is better), seeds {', '.join(map(str, args.seeds))}, "
          f"{steps} steps a model; baseline: {baseline}")
    print(table(rows, [("options", "options", ""), ("seeds", "seeds", "d"), ("mean", "genoformer mean", ".4f"),
                       ("min", "min", ".4f"), ("max", "max", ".4f"), ("baseline", "baseline mean", ".4f"),
                       ("diff", "genoformer - baseline", ".4f"), ("diff_min", "min", ".4f"),
                       ("diff_max", "max", ".4f")]))
    save_json(args.json, {"benchmark": f"ablation_{args.benchmark}", "budget": str(args.budget), "machine": machine(),
                          "seeds": args.seeds, "steps": steps, "calibrated_s_per_step": per_step,
                          "baseline": baseline, "command": " ".join(sys.argv), "rows": rows,
                          "results": [{"options": r["options"], "summary": r["summary"],
                                       "runs": [dataclasses.asdict(m) for m in r["runs"]]} for r in results]})


if __name__ == "__main__":
    main()
