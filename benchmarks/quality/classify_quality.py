"""Promoter classification quality: Genomic Benchmarks human_nontata_promoters, seeded 80/20 split.

Only the official *test* split ships with real sequences (9,034 sequences of 251 bp,
../shared/data/genomic_benchmarks), so a small `classify` model trains on a seeded, stratified
80 % of it and is scored once, after the last step, on the other 20 % (nothing is chosen on
them). The published CNN baseline (84.6 % accuracy, Grešová et al. 2023) trained on the official
27,097-sequence train split and was scored on all 9,034: the numbers sit side by side, they
are not a like-for-like comparison.

    python benchmarks/quality/classify_quality.py [--budget 6m|400] [--attention full] [--json PATH]
"""
from __future__ import annotations

import argparse
import csv
import sys
from collections import Counter
from pathlib import Path

import quality_common
import torch
from quality_common import (
    PROMOTERS,
    add_common_args,
    check_data,
    machine,
    model_options,
    save_json,
    steps_for,
    table,
    work_dir,
)

from genoformer.train import TrainConfig, train

PUBLISHED_CNN = 0.846  # Genomic Benchmarks paper, CNN on human_nontata_promoters (official train/test split)
VAL_FRACTION = 0.2


def classify_config(args, out: Path, attention: str | None = None) -> TrainConfig:
    return TrainConfig(task="classify", sequences=str(PROMOTERS), val_fraction=VAL_FRACTION, alphabet="dna",
                       per_residue=False, window=251, k=args.k, stride=args.stride,
                       model=model_options(args, attention), lr=args.lr, batch_size=args.batch_size, max_steps=1,
                       ckpt_every=10 ** 9, val_every=10 ** 9, seed=args.seed, device="cpu", out=str(out),
                       progress=False)


def train_and_score(config: TrainConfig) -> dict:
    """Train; the one validation (after the last step) is the held-out accuracy."""
    summary = train(config)
    rows = list(csv.DictReader((Path(config.out) / "metrics.csv").open()))
    val = {r["metric"]: float(r["value"]) for r in rows if r["split"] == "val"}
    return {"steps": summary["step"], "train_seconds": summary["seconds"], "final_loss": summary["final_loss"],
            "val_accuracy": val["accuracy"], "val_loss": val["loss"],
            "sequences_per_s": summary["step"] * config.batch_size / summary["seconds"]}


def add_model_args(ap: argparse.ArgumentParser, attention: str, stride: int | None, bucket_size: int,
                   d_model: int = 128, depth: int = 4, batch_size: int = 32) -> None:
    ap.add_argument("--k", type=int, default=6)
    ap.add_argument("--stride", type=int, default=stride, help="token stride (default k)")
    quality_common.add_model_args(ap, d_model=d_model, depth=depth, bucket_size=bucket_size, attention=attention,
                                  batch_size=batch_size)


def model_record(args) -> dict:
    return {k: getattr(args, k) for k in ("k", "stride", "d_model", "depth", "heads", "bucket_size", "n_hashes",
                                          "attention", "lr", "batch_size", "seed")}


def majority_share() -> float:
    """Accuracy of always answering the commoner label (over the whole file: the split is stratified)."""
    labels = Counter(r["label"] for r in csv.DictReader(PROMOTERS.open()))
    return max(labels.values()) / sum(labels.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap, "classify_quality", "6m")
    # 251 bp at k = stride = 6 are 42 tokens: every attention sees them all, so full is the honest name
    add_model_args(ap, attention="full", stride=None, bucket_size=32)
    args = ap.parse_args()
    check_data(PROMOTERS)
    torch.set_num_threads(args.threads)
    tmp = work_dir(args.keep)
    folder = Path(args.keep or tmp.name)
    try:
        config = classify_config(args, folder / "run")
        config.max_steps, per_step = steps_for(args.budget, config, folder)
        result = train_and_score(config)
    finally:
        if tmp is not None:
            tmp.cleanup()
    majority = majority_share()
    rows = [{"model": f"genoformer classify ({args.attention}, {result['steps']} steps)",
             "split": "seeded 80/20 of the test file", "accuracy": result["val_accuracy"]},
            {"model": "majority class", "split": "same 20 %", "accuracy": majority},
            {"model": "published CNN (Grešová et al. 2023)", "split": "official train -> test", "accuracy": PUBLISHED_CNN}]
    print(f"human_nontata_promoters, budget {args.budget}; the CNN's split differs (it trained on 27,097 "
          "sequences we do not have): not like-for-like")
    print(table(rows, [("model", "model", ""), ("split", "split", ""), ("accuracy", "accuracy", ".3f")]))
    save_json(args.json, {"benchmark": "classify_quality", "budget": str(args.budget), "machine": machine(),
                          "data": str(PROMOTERS.name), "val_fraction": VAL_FRACTION, "model": model_record(args),
                          "calibrated_s_per_step": per_step, "result": result, "majority_class": majority,
                          "published_cnn": PUBLISHED_CNN, "command": " ".join(sys.argv), "rows": rows})


if __name__ == "__main__":
    main()
