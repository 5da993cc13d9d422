"""Promoter classification quality (the promoter benchmark): Genomic Benchmarks human_nontata_promoters.

This is the project's promoter-style classification benchmark: human_nontata_promoters is the only
Genomic Benchmarks set whose sequences ship in ../shared/data (the others are coordinates only).
Only its official *test* split has sequences (9,034 of 251 bp), so each seed draws a seeded,
stratified 80/20 split of it (the seed of the training code's --val-fraction split):

- genoformer: a small `classify` model trains on the 80 % and is scored once, after the last
  step, on the 20 % (nothing is chosen on them);
- k-mer logistic regression (the baseline, kmer_baseline.py): L2 logistic regression on k-mer
  frequencies; the k (each of 1..6, or 1-6 concatenated) and the penalty are chosen on a seeded
  stratified quarter of the 80 %, then refitted on all of the 80 % and scored on the same 20 %;
- majority class: the commoner label of the 80 %, scored on the 20 %.
`--score-on validation` keeps the 20 % out altogether, to choose settings: genoformer trains on the
80 % less the k-mer regression's own validation quarter and is scored on that quarter, beside the
regression's score there (the best of its grid, so slightly flattered).
The published CNN (84.6 % accuracy, Grešová et al. 2023) trained on the official 27,097-sequence
train split and was scored on all 9,034: it is printed beside, not like-for-like.

    python benchmarks/quality/classify_quality.py [--budget 6m|400] [--seeds 0,1,2] [--attention full]
        [--score-on validation] [--json PATH]
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import quality_common
import torch
from kmer_baseline import VAL_SHARE, choose_and_fit, labels_of
from quality_common import (
    PROMOTERS,
    Measurement,
    TrainConfig,
    add_common_args,
    check_data,
    machine,
    model_options,
    print_summary,
    save_json,
    steps_for,
    table,
    train,
    with_options,
    work_dir,
)

from genoformer.data.sequences import load_sequence_data, split

PUBLISHED_CNN = 0.846  # Genomic Benchmarks paper, CNN on human_nontata_promoters (official train/test split)
VAL_FRACTION = 0.2
KMER_LR = "k-mer logistic regression"


def classify_config(args, out: Path, attention: str | None = None, seed: int = 0,
                    options: dict | None = None) -> TrainConfig:
    sequences, val_fraction = training_split(args, out.parent, seed)
    config = TrainConfig(task="classify", sequences=sequences, val_fraction=val_fraction, alphabet="dna",
                         per_residue=False, window=251, k=args.k, stride=args.stride,
                         model=model_options(args, attention), lr=args.lr, batch_size=args.batch_size, max_steps=1,
                         ckpt_every=10 ** 9, val_every=10 ** 9, seed=seed, device="cpu", out=str(out),
                         progress=False)
    return with_options(config, options or {})


def score_on(args) -> str:
    return getattr(args, "score_on", "test")  # attention_quality.py's parser has no --score-on


def training_split(args, folder: Path, seed: int) -> tuple[str, float]:
    """The file the model reads and the share of it it is scored on: the shipped file and its 20 % (test),
    or the seed's 80 % written to `folder` and the k-mer regression's validation quarter of it (the same
    `split`, seed and order, so the same sequences)."""
    if score_on(args) == "test":
        return str(PROMOTERS), VAL_FRACTION
    return training_file(folder, seed), VAL_SHARE


@functools.lru_cache(maxsize=None)  # written once per seed, whatever the number of grid rows
def training_file(folder: Path, seed: int) -> str:
    """The seed's 80 % of the shipped file, written as a seq,label CSV in `folder`."""
    train = load_sequence_data(str(PROMOTERS), val_fraction=VAL_FRACTION, seed=seed).train
    path = folder / f"promoters-80-seed{seed}.csv"
    folder.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["seq", "label"])
        writer.writerows(zip(train.sequences, train.labels))
    return str(path)


@functools.lru_cache(maxsize=None)  # the same for every option of an ablation grid
def baselines(seed: int) -> dict:
    """The k-mer logistic regression and the majority class on the seed's split (the training code's split)."""
    started = time.perf_counter()
    data = load_sequence_data(str(PROMOTERS), val_fraction=VAL_FRACTION, seed=seed)
    choice = choose_and_fit(data.train, data.class_names, seed)
    truth = labels_of(data.val, data.class_names)
    commonest = Counter(labels_of(data.train, data.class_names).tolist()).most_common(1)[0][0]
    return {"kmer_accuracy": float((choice.predict(data.val.sequences) == truth).mean()),
            "kmer_choice": {"feature_set": choice.feature_set, "l2": choice.l2, "val_accuracy": choice.val_accuracy},
            "kmer_grid": choice.grid, "majority_accuracy": float(np.mean(truth == commonest)),
            "validation_majority_accuracy": float(np.mean(labels_of(data.train, data.class_names)[
                split(data.train, VAL_SHARE, seed)[1]] == commonest)),
            "train_sequences": len(data.train), "scored_sequences": len(data.val),
            "seconds": time.perf_counter() - started}


def measure(args, folder: Path, seed: int, options: dict, steps: int) -> Measurement:
    """One seed: genoformer and the baselines on the seed's 80/20 split (see the module docstring)."""
    result = None
    if not args.baseline_only:
        config = classify_config(args, folder / f"classify-seed{seed}-{time.monotonic_ns()}", seed=seed,
                                 options=options)
        config.max_steps = steps
        result = train_and_score(config)
    base = baselines(seed)
    if score_on(args) == "validation":
        return Measurement("validation accuracy", result and result["val_accuracy"],
                           {KMER_LR: base["kmer_choice"]["val_accuracy"],
                            "majority class": base["validation_majority_accuracy"]},
                           detail={"genoformer": result, "baselines": base})
    return Measurement("held-out accuracy", result and result["val_accuracy"],
                       {KMER_LR: base["kmer_accuracy"], "majority class": base["majority_accuracy"]},
                       detail={"genoformer": result, "baselines": base})


def probe_config(args, folder: Path, options: dict) -> TrainConfig:
    """The model a minutes budget is calibrated on."""
    return classify_config(args, folder / "probe", options=options)


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
                                          "attention", "lr", "batch_size")}


def add_args(ap: argparse.ArgumentParser) -> None:
    """This benchmark's options (also read by ablation.py)."""
    # 251 bp at k = stride = 6 are 42 tokens: every attention sees them all, so full is the honest name
    add_model_args(ap, attention="full", stride=None, bucket_size=32)
    ap.add_argument("--score-on", choices=("test", "validation"), default="test",
                    help="test: the seed's 20 %% (default); validation: a quarter of the 80 %%, the 20 %% left out")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap, "classify_quality", "6m")
    add_args(ap)
    return ap


def main() -> None:
    ap = parser()
    args = ap.parse_args()
    check_data(PROMOTERS)
    torch.set_num_threads(args.threads)
    tmp = work_dir(args.keep)
    folder = Path(args.keep or tmp.name)
    try:
        steps, per_step = (0, None) if args.baseline_only else steps_for(args.budget, probe_config(args, folder, {}),
                                                                          folder)
        runs = [measure(args, folder, seed, {}, steps) for seed in args.seeds]
    finally:
        if tmp is not None:
            tmp.cleanup()
    rows = []
    for seed, run in zip(args.seeds, runs):
        choice = run.detail["baselines"]["kmer_choice"]
        trained = run.genoformer is not None
        rows += [{"seed": seed, "model": f"genoformer classify ({args.attention}, {steps} steps)",
                  "accuracy": run.genoformer}] * trained
        rows += [{"seed": seed, "model": f"{KMER_LR} (k {choice['feature_set']}, L2 {choice['l2']:g}; "
                                        f"validation {choice['val_accuracy']:.3f})", "accuracy": run.baselines[KMER_LR]},
                 {"seed": seed, "model": "majority class", "accuracy": run.baselines["majority class"]}]
        rows += [{"seed": seed, "model": f"genoformer - {KMER_LR}", "accuracy": run.differences()[KMER_LR]}] * trained
    print(f"human_nontata_promoters, seeded stratified 80/20 split of the 9,034-sequence test file, scored on the "
          f"{'20 %' if args.score_on == 'test' else 'validation quarter of the 80 %'}; budget "
          f"{args.budget}; published CNN {PUBLISHED_CNN:.3f} (official 27,097-sequence train split, scored on all "
          "9,034: not like-for-like)")
    print(table(rows, [("seed", "seed", "d"), ("model", "model", ""), ("accuracy", "accuracy", ".3f")]))
    summary = print_summary(runs, args.seeds)
    save_json(args.json, {"benchmark": "classify_quality", "budget": str(args.budget), "machine": machine(),
                          "data": str(PROMOTERS.name), "val_fraction": VAL_FRACTION,
                          "score_on": args.score_on, "model": model_record(args),
                          "seeds": args.seeds, "steps": steps, "calibrated_s_per_step": per_step,
                          "published_cnn": PUBLISHED_CNN, "command": " ".join(sys.argv), "summary": summary,
                          "runs": [dataclasses.asdict(r) for r in runs], "rows": rows})


if __name__ == "__main__":
    main()
