"""LSH vs local vs full attention: the same model, data, seed and number of steps, only the attention differs.

Tasks (--tasks, comma-separated):
- classify: human_nontata_promoters, seeded 80/20 split (as classify_quality.py), but with
  overlapping k-mers (stride 1: 246 tokens a sequence) and bucket 16, so LSH and local
  attention each see a fraction of the sequence (local: blocks of 16 tokens and the block
  before; LSH: 2 hash rounds of buckets of 16); scored by held-out accuracy;
- variant: the NA12878 set of variant_quality.py (train chr20:10,010,532-10,100,000, predict ->
  export -> evaluate inside the confident BED of chr20:10,000,847-10,010,531), balanced class
  weights; scored by SNV F1.
A minutes budget is calibrated once per task on the LSH model and the same steps run for all
three. "vs full" is the difference in the score (percentage points) to full attention with the
same seed; negative means worse. --seeds repeats the comparison (for classify the seed also
draws the split) and adds the mean, range and mean difference over the seeds.

    python benchmarks/quality/attention_quality.py [--tasks classify,variant] [--budget 2m|300] [--seeds 0,1,2]
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import statistics
import sys
from pathlib import Path

import torch
import variant_quality
from variant_callers import score
from classify_quality import (
    add_model_args,
    classify_config,
    model_record,
    train_and_score,
)
from quality_common import (
    BAM,
    CONFIDENT,
    FASTA,
    PROMOTERS,
    add_common_args,
    check_data,
    machine,
    save_json,
    steps_for,
    table,
    work_dir,
)

KINDS = ("lsh", "local", "full")


def classify_rows(args, folder: Path) -> list[dict]:
    steps, _ = steps_for(args.budget, classify_config(args, folder / "probe", "lsh"), folder)
    rows = []
    for seed in args.seeds:  # the seed also draws the 80/20 split
        for kind in KINDS:
            config = dataclasses.replace(classify_config(args, folder / f"classify-{kind}-seed{seed}", kind, seed),
                                         max_steps=steps)
            result = train_and_score(config)
            rows.append({"task": "classify", "attention": kind, "seed": seed, "metric": "accuracy",
                         "score": result["val_accuracy"], "steps": steps, "train_seconds": result["train_seconds"],
                         "final_loss": result["final_loss"]})
    return rows


def variant_rows(args, folder: Path) -> list[dict]:
    # the variant_quality.py model (its defaults) with balanced class weights: unweighted, this model
    # learns "everything is hom_ref" within a few hundred steps (variant_quality.json), which would
    # leave nothing to compare
    shape = argparse.Namespace(window=args.variant_window, k=6, d_model=64, depth=2, heads=4, bucket_size=32,
                               n_hashes=2, lr=1e-3, batch_size=4, class_weights="balanced", attention="lsh")
    inputs = variant_quality.real_inputs()
    probe = variant_quality.variant_config(shape, folder / "probe", args.seeds[0], {}, **inputs)
    steps, _ = steps_for(args.budget, probe, folder)
    rows = []
    for seed in args.seeds:
        for kind in KINDS:
            sub = folder / f"variant-{kind}-seed{seed}"
            sub.mkdir()
            config = variant_quality.variant_config(shape, sub / "run", seed, {"attention": kind}, **inputs)
            vcf, info = variant_quality.genoformer_calls(config, steps, variant_quality.EVAL_REGION, 0.5, sub)
            scored = score(kind, vcf, [variant_quality.EVAL_REGION], CONFIDENT)
            rows.append({"task": "variant", "attention": kind, "seed": seed, "metric": "SNV F1",
                         "score": scored["snv_f1"], "steps": steps, "train_seconds": info["train_seconds"],
                         "final_loss": info["final_loss"], "counts": scored})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Per task and attention over the seeds: mean score, its range, and the mean paired difference to full."""
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        for kind in KINDS:
            runs = [r for r in rows if r["task"] == task and r["attention"] == kind]
            scores = [r["score"] for r in runs]
            out.append({"task": task, "attention": kind, "metric": runs[0]["metric"], "seeds": len(runs),
                        "mean": statistics.fmean(scores), "min": min(scores), "max": max(scores),
                        "vs_full_points": statistics.fmean(r["vs_full_points"] for r in runs)})
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap, "attention_quality", "2m", baselines=False)
    ap.add_argument("--tasks", default="classify,variant")
    ap.add_argument("--variant-window", type=int, default=4096)
    # smaller than classify_quality.py's model: LSH over 246 tokens costs ~8 s a step at d_model 128,
    # depth 4, batch 32 on the shared 2-core CPU, too slow to compare three attentions in minutes
    add_model_args(ap, attention="lsh", stride=1, bucket_size=16, d_model=64, depth=2, batch_size=16)
    return ap


def main() -> None:
    ap = parser()
    args = ap.parse_args()
    tasks = args.tasks.split(",")
    if set(tasks) - {"classify", "variant"}:
        ap.error(f"--tasks: choose from classify, variant (got {args.tasks})")
    check_data(PROMOTERS, *([FASTA, BAM] if "variant" in tasks else []))
    torch.set_num_threads(args.threads)
    tmp = work_dir(args.keep)
    folder = Path(args.keep or tmp.name)
    rows: list[dict] = []
    try:
        if "classify" in tasks:
            rows += classify_rows(args, folder)
        if "variant" in tasks:
            rows += variant_rows(args, folder)
    finally:
        if tmp is not None:
            tmp.cleanup()
    for row in rows:  # an F1 with nothing called is NaN: count it as 0
        row["score"] = 0.0 if math.isnan(row["score"]) else row["score"]
    for row in rows:
        full = next(r["score"] for r in rows if r["task"] == row["task"] and r["seed"] == row["seed"]
                    and r["attention"] == "full")
        row["vs_full_points"] = 100 * (row["score"] - full)
    print(f"budget {args.budget} per model (same steps for the three attentions)")
    print(table(rows, [("task", "task", ""), ("attention", "attention", ""), ("seed", "seed", "d"),
                       ("metric", "metric", ""),
                       ("score", "score", ".3f"), ("vs_full_points", "vs full (pts)", "+.1f"),
                       ("steps", "steps", "d"), ("train_seconds", "train+val s", ".0f"), ("final_loss", "final loss", ".3f")]))
    summary = summarise(rows)
    if len(args.seeds) > 1:
        print(f"over seeds {', '.join(map(str, args.seeds))}:")
        print(table(summary, [("task", "task", ""), ("attention", "attention", ""), ("metric", "metric", ""),
                              ("mean", "mean", ".3f"), ("min", "min", ".3f"), ("max", "max", ".3f"),
                              ("vs_full_points", "vs full, mean (pts)", "+.1f")]))
    save_json(args.json, {"benchmark": "attention_quality", "budget": str(args.budget), "machine": machine(),
                          "model": model_record(args), "variant_window": args.variant_window,
                          "seeds": args.seeds, "command": " ".join(sys.argv), "summary": summary, "rows": rows})


if __name__ == "__main__":
    main()
