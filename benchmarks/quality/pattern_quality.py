"""CpG-island quality per base: genoformer's `pattern` model against a GC / CpG-ratio window baseline.

Truth: the UCSC CpG-island track (annotations_hg19/cpg_islands_hg19_ucsc.txt) on the real
1.1 Mb of the chr20 FASTA, chr20:9,995,001-11,095,000, which holds six islands. Sub-regions:
- test: chr20:10,150,001-10,250,000 (3 islands, 1,570 island bases of 100,000);
- validation: chr20:10,550,001-11,095,000 (1 island, 3,038 bases);
- training: chr20:9,995,001-10,150,000 and chr20:10,250,001-10,550,000 (2 islands, 1,021 bases).
The test region is the one with the most islands; still, three islands are few, so its AUPRC moves
a lot with any one of them. `--score-on validation` scores both models on the validation region
instead: the split to choose genoformer's settings on, leaving the test region unseen (the
baseline's window is chosen there too, which only flatters the baseline).

- genoformer: a small `pattern` model (--bed the UCSC track) trains on the training regions for
  the budget's steps (nothing of it is chosen, so it does not validate), then `predict` over the
  test region -> `genoformer evaluate` (AUROC, AUPRC over the test bases);
- baseline (cpg_baseline.py): logistic regression on the GC fraction and CpG observed/expected
  of a window centred on each base, the window size chosen on the validation region's AUPRC,
  scored on the same test bases as `genoformer evaluate` scores (float16 probabilities, ties
  together). Features near a region's ends read the real sequence beyond it (no labels do).

    python benchmarks/quality/pattern_quality.py [--budget 6m|300] [--seeds 0,1,2] [--baseline-only]
        [--json PATH]
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import sys
import time
from pathlib import Path

import torch
from cpg_baseline import WINDOWS, Piece, choose_and_fit, score
from quality_common import (
    CPG_ISLANDS,
    FASTA,
    Measurement,
    TrainConfig,
    add_common_args,
    add_model_args,
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

from genoformer.coords import Interval, parse_region
from genoformer.evaluate.patterns import PatternEvaluateConfig, evaluate_pattern
from genoformer.io.fasta import Reference
from genoformer.io.tracks import Tracks
from genoformer.predict.runner import PredictConfig, predict

REAL = Interval("chr20", 9_995_000, 11_095_000)
TEST_REGION = "chr20:10,150,001-10,250,000"
VAL_REGION = "chr20:10,550,001-11,095,000"
TRAIN_REGIONS = ["chr20:9,995,001-10,150,000", "chr20:10,250,001-10,550,000"]
GC_CPG_LR = "GC / CpG o/e window logistic regression"


def piece(ref: Reference, tracks: Tracks, region: str) -> Piece:
    """The region's bases with max(WINDOWS) of real sequence around them, and its island mask."""
    iv = parse_region(region, ref.contigs)
    lo, hi = max(iv.start - max(WINDOWS), REAL.start), min(iv.end + max(WINDOWS), REAL.end)
    sequence = ref.fetch(iv.contig, lo, hi).tobytes()
    return Piece(sequence, slice(iv.start - lo, iv.end - lo), tracks.mask(iv.contig, iv.start, iv.end)[:, 0])


def scored_region(args) -> str:
    return VAL_REGION if args.score_on == "validation" else TEST_REGION


@functools.lru_cache(maxsize=None)  # deterministic: the same for every seed and option
def baseline(scored: str = TEST_REGION) -> dict:
    started = time.perf_counter()
    ref = Reference(FASTA)
    tracks = Tracks.from_files([str(CPG_ISLANDS)], ref.contigs)
    test = piece(ref, tracks, scored)
    choice = choose_and_fit([piece(ref, tracks, r) for r in TRAIN_REGIONS], piece(ref, tracks, VAL_REGION))
    auroc, auprc = score(test.truth, choice.probabilities(test))
    return {"auroc": auroc, "auprc": auprc, "window": choice.window, "grid": choice.grid,
            "test_bases": int(test.truth.size), "test_island_bases": int(test.truth.sum()),
            "prevalence": float(test.truth.mean()), "seconds": time.perf_counter() - started}


def pattern_config(args, out: Path, seed: int, options: dict) -> TrainConfig:
    config = TrainConfig(task="pattern", reference=str(FASTA), bed=[str(CPG_ISLANDS)], train_regions=TRAIN_REGIONS,
                         window=args.window,
                         k=args.k, model=model_options(args), lr=args.lr,
                         batch_size=args.batch_size, max_steps=1, ckpt_every=10 ** 9, val_every=10 ** 9, seed=seed,
                         device="cpu", out=str(out), progress=False)
    return with_options(config, options)


def measure(args, folder: Path, seed: int, options: dict, steps: int) -> Measurement:
    scored = scored_region(args)
    base = baseline(scored)
    model, info = {"auroc": None, "auprc": None}, None
    if not args.baseline_only:
        run = folder / f"pattern-seed{seed}-{time.monotonic_ns()}"
        config = pattern_config(args, run / "run", seed, options)
        config.max_steps = steps
        summary = train(config)
        preds = run / "test.h5"
        predict(PredictConfig(model=config.out, reference=str(FASTA), regions=[scored], out=str(preds),
                              device="cpu", progress=False))
        result = evaluate_pattern(PatternEvaluateConfig(predictions=str(preds), tracks=[str(CPG_ISLANDS)],
                                                        regions=[scored]))
        model = {"auroc": result.classes[0].auroc, "auprc": result.classes[0].auprc}
        info = {"steps": summary["step"], "train_seconds": summary["seconds"], "final_loss": summary["final_loss"],
                "test_bases": result.classes[0].bases, "test_island_bases": result.classes[0].positives}
    runs = [Measurement(f"{name}, CpG islands, {args.score_on} region", model[key], {GC_CPG_LR: base[key]})
            for name, key in (("AUPRC", "auprc"), ("AUROC", "auroc"))]
    return dataclasses.replace(runs[0], also=runs[1:], detail={"genoformer": info, "baseline": base})


def probe_config(args, folder: Path, options: dict) -> TrainConfig:
    return pattern_config(args, folder / "probe", 0, options)


def add_args(ap: argparse.ArgumentParser) -> None:
    """This benchmark's options (also read by ablation.py)."""
    ap.add_argument("--window", type=int, default=4096, help="training and prediction window in bases")
    ap.add_argument("--k", type=int, default=1, help="k-mer size (1: one token per base)")
    add_model_args(ap, d_model=64, batch_size=4)
    ap.add_argument("--score-on", choices=("test", "validation"), default="test",
                    help="region both models are scored on (validation: to choose settings, the test region unseen)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap, "pattern_quality", "6m")
    add_args(ap)
    return ap


def main() -> None:
    ap = parser()
    args = ap.parse_args()
    check_data(FASTA, CPG_ISLANDS)
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
    base = runs[0].detail["baseline"]
    print(f"train {', '.join(TRAIN_REGIONS)}; validation {VAL_REGION}; test {TEST_REGION}; scored on the "
          f"{args.score_on} region ({base['test_island_bases']:,} island bases of {base['test_bases']:,}); "
          f"budget {args.budget}")
    print(table(base["grid"], [("window", "baseline window", "d"), ("val_auroc", "validation AUROC", ".4f"),
                               ("val_auprc", "validation AUPRC", ".4f")]))
    print(f"chosen window: {base['window']} bases")
    summary = print_summary(runs, args.seeds)
    save_json(args.json, {"benchmark": "pattern_quality", "budget": str(args.budget), "machine": machine(),
                          "regions": {"train": TRAIN_REGIONS, "validation": VAL_REGION, "test": TEST_REGION},
                          "model": {k: getattr(args, k) for k in ("window", "k", "d_model", "depth", "heads",
                                                                  "bucket_size", "n_hashes", "attention", "lr",
                                                                  "batch_size")},
                          "score_on": args.score_on, "seeds": args.seeds, "steps": steps,
                          "calibrated_s_per_step": per_step,
                          "baseline_only": args.baseline_only, "command": " ".join(sys.argv), "summary": summary,
                          "runs": [dataclasses.asdict(r) for r in runs]})


if __name__ == "__main__":
    main()
