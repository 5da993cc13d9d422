"""Merge ablation.py results of the same benchmark, options and steps run for different seeds (one process
per seed, in parallel) into one result: every row's runs over all the seeds, its summary recomputed.

    python benchmarks/quality/merge_seeds.py --json OUT.json RUN_SEED0.json RUN_SEED1.json RUN_SEED2.json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from quality_common import Measurement, save_json, spread, summary_rows, table


def measurement(values: dict) -> Measurement:
    also = [measurement(a) for a in values.get("also", [])]
    return Measurement(**(values | {"also": also}))


def merge(results: list[dict]) -> dict:
    """One ablation result from several with the same benchmark, steps and option rows (their seeds joined)."""
    first = results[0]
    for other in results[1:]:
        for key in ("benchmark", "steps", "baseline"):
            if other[key] != first[key]:
                raise SystemExit(f"cannot merge: {key} differs ({first[key]!r} and {other[key]!r})")
        if [r["options"] for r in other["results"]] != [r["options"] for r in first["results"]]:
            raise SystemExit("cannot merge: the option rows differ")
    seeds = [s for r in results for s in r["seeds"]]
    if len(set(seeds)) != len(seeds):
        raise SystemExit(f"cannot merge: a seed appears twice ({seeds})")
    rows, merged = [], []
    for i, row in enumerate(first["results"]):
        runs = [run for r in results for run in r["results"][i]["runs"]]
        measured = [measurement(run) for run in runs]
        model = spread([m.genoformer for m in measured])
        diff = spread([m.differences()[first["baseline"]] for m in measured])
        merged.append({"options": row["options"], "summary": summary_rows(measured), "runs": runs})
        rows.append({"options": ", ".join(f"{k}={v}" for k, v in row["options"].items()) or "script defaults",
                     "seeds": model["n"], "mean": model["mean"], "min": model["min"], "max": model["max"],
                     "baseline": spread([m.baselines[first["baseline"]] for m in measured])["mean"],
                     "diff": diff["mean"], "diff_min": diff["min"], "diff_max": diff["max"]})
    return first | {"seeds": seeds, "rows": rows, "results": merged, "machine": [r["machine"] for r in results],
                    "command": [r["command"] for r in results]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+", help="ablation.py JSON results, one or more seeds each")
    ap.add_argument("--json", required=True, help="write the merged result here")
    args = ap.parse_args()
    result = merge([json.loads(Path(p).read_text()) for p in args.inputs])
    print(f"{result['benchmark']}: seeds {', '.join(map(str, result['seeds']))}, {result['steps']} steps a model; "
          f"baseline: {result['baseline']}")
    print(table(result["rows"], [("options", "options", ""), ("seeds", "seeds", "d"),
                                 ("mean", "genoformer mean", ".4f"), ("min", "min", ".4f"), ("max", "max", ".4f"),
                                 ("baseline", "baseline mean", ".4f"), ("diff", "genoformer - baseline", ".4f"),
                                 ("diff_min", "min", ".4f"), ("diff_max", "max", ".4f")]))
    save_json(args.json, result)


if __name__ == "__main__":
    main()
