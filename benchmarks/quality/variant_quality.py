"""Variant calling quality on NA12878 chr20: small genoformer models next to plain callers, two settings.

Every caller sees the same reads (DeepVariant's NA12878 chr20:10.0-10.1 Mb BAM) and is scored by
the same `genoformer.evaluate.variants` against the GIAB truth (variant_callers.py holds the
plain callers and the scorer):

- real: a small `variant` model (LSH attention by default) trains on chr20:10,010,532-10,090,000,
  then `predict` over the evaluation region chr20:10,000,847-10,010,531 -> `export` (VCF) ->
  `evaluate` inside the confident BED (49 truth variants). Headline: F1 over all variants, next to
  bcftools and the allele-fraction rule on the same region. The export threshold is chosen on the
  validation region chr20:10,090,001-10,100,000 (the rest of the training stretch, never trained
  on; scored against all its truth records): the threshold of THRESHOLDS with the best F1 over all
  variants there (ties: the higher). Nothing is chosen on the scored region; `--threshold 0.5`
  fixes it instead.
- simulated: a model trained only on a simulated genome (all its contigs but the last two; `genoformer
  simulate`, --sim-* options: by default 3 x 500 kb, ~50x, insert ~N(320, 70) like this BAM, one
  variant per 500 bp, 40 % of them indels, seeded by the run's seed), its QUAL and GQ calibrated
  on the calls of the last but one (`genoformer calibrate`, at the threshold chosen there as above), is
  scored twice: on the held-out last contig (its simulated truth, inside its confident BED) and over
  chr20:10,000,001-10,100,000 of the real reads against ALL the truth variants there (221
  records; no confident BED). Recall is exact there; precision is approximate, since outside
  the confident BED the truth is incomplete and some "false positives" may be real. bcftools is
  scored on the same terms, on the same reads. Genotype concordance: the share of true
  positives with the truth's zygosity. Counts per SNV, insertion and deletion (evaluate
  left-aligns both sides against the reference).

Each table prints genoformer - baseline for precision, recall, F1 (and concordance).
The model's defaults are k 6 and window 4,096; on the real setting `--k 1 --window 1024
--class-weights balanced` is what learns within minutes (docs/benchmarks.md).

    python benchmarks/quality/variant_quality.py [--settings real,simulated] [--budget 6m|300]
        [--seeds 0,1,2] [--k 1 --window 1024] [--class-weights balanced] [--candidate-weight 100]
        [--threshold validation|0.5] [--baseline-only] [--json PATH]
        [--no-stem] [--no-decoder] [--rc-augment] [--rc-average]
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

import torch
from quality_common import (
    BAM,
    CONFIDENT,
    FASTA,
    TRUTH,
    Measurement,
    TrainConfig,
    add_common_args,
    add_model_args,
    check_data,
    machine,
    model_options,
    minus,
    print_summary,
    save_json,
    steps_for,
    table,
    train,
    with_options,
    work_dir,
)
from variant_callers import KINDS, allele_fraction_calls, bcftools_calls, score

from genoformer.io.evidence import EVIDENCE_SCALINGS
from genoformer.predict.calibrate import fit_calibration
from genoformer.predict.export import ExportConfig, export
from genoformer.predict.runner import PredictConfig, predict
from genoformer.simulate.genome import SimulatedExample, simulate

TRAIN_REGION = "chr20:10,010,532-10,090,000"
VAL_REGION = "chr20:10,090,001-10,100,000"  # the rest of the training stretch: picks the export threshold
EVAL_REGION = "chr20:10,000,847-10,010,531"
ALL_REGION = "chr20:10,000,001-10,100,000"  # every truth variant (10,000,117-10,099,832)
BCFTOOLS, ALLELE_FRACTION = "bcftools call -mv", "allele fraction (SNV only)"
SETTINGS = ("real", "simulated")
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # the export thresholds the validation chooses from
SIM_INSERT = (320, 70)  # mean, sd of the simulated fragments: this BAM's proper pairs have median 319, sd 73


def variant_config(args, out: Path, seed: int, options: dict, **inputs) -> TrainConfig:
    model = dataclasses.replace(model_options(args), stem=args.stem, decoder=args.decoder,
                                evidence_scaling=args.evidence_scaling)
    config = TrainConfig(task="variant", window=args.window, k=args.k, model=model, lr=args.lr,
                         batch_size=args.batch_size, class_weights=args.class_weights,
                         candidate_weight=args.candidate_weight, rc_augment=args.rc_augment,
                         max_steps=1, ckpt_every=10 ** 9, val_every=10 ** 9, seed=seed, device="cpu", out=str(out),
                         progress=False, **inputs)
    return with_options(config, options)


def real_inputs() -> dict:
    return {"reference": str(FASTA), "bam": str(BAM), "truth_vcf": str(TRUTH), "train_regions": [TRAIN_REGION]}


def simulated_contigs(args) -> tuple[list[str], str, str]:
    """(training contigs, validation contig, held-out contig) of the simulated genome: the last two are
    validation (threshold, calibration) and held out; the rest train."""
    names = [f"sim{i + 1}" for i in range(args.sim_contigs)]
    return names[:-2], names[-2], names[-1]


def simulated_inputs(args, folder: Path, seed: int) -> dict:
    """The simulated training example of `seed` (written once into `folder`), trained on `simulated_contigs`."""
    ex = simulated_example(args, folder, seed)
    return {"reference": str(ex.reference), "bam": str(ex.reads), "truth_vcf": str(ex.truth_vcf),
            "confident_bed": str(ex.confident_bed), "train_regions": simulated_contigs(args)[0]}


def simulated_example(args, folder: Path, seed: int) -> SimulatedExample:
    out = folder / f"simulated-seed{seed}"
    return SimulatedExample.in_dir(out) if (out / "manifest.json").is_file() else simulate(
        out, seed, contigs=[(f"sim{i + 1}", args.sim_contig_length) for i in range(args.sim_contigs)],
        coverage=args.sim_coverage, insert_mean=SIM_INSERT[0], insert_sd=SIM_INSERT[1],
        variant_rate=args.sim_variant_rate, indel_fraction=args.sim_indel_fraction)


def choose_threshold(run: str, region: str, folder: Path, reference: Path, bam: Path, truth: Path,
                     confident: Path | None, rc_average: bool = False) -> tuple[float, Path, list[dict]]:
    """(the threshold of THRESHOLDS with the best F1 over all variants of `region`, ties to the higher; the
    predictions there, made as the scored ones are (`rc_average`); each threshold's scores)."""
    folder.mkdir(parents=True, exist_ok=True)
    preds = folder / "validation.h5"
    predict(PredictConfig(model=run, reference=str(reference), bam=str(bam), regions=[region], out=str(preds),
                          device="cpu", rc_average=rc_average, progress=False))
    rows = []
    for threshold in THRESHOLDS:
        vcf = folder / f"validation-{threshold}.vcf.gz"
        export(ExportConfig(predictions=str(preds), vcf=str(vcf), threshold=threshold, progress=False),
               command="benchmarks/quality/variant_quality.py")
        scored = score(f"threshold {threshold}", vcf, [region], confident, truth, reference)
        rows.append({"threshold": threshold} | {k: scored[k] for k in ("all_f1", "snv_f1", "indel_f1",
                                                                     "all_genotype_concordance")})
    best = max(rows, key=lambda r: (-1 if r["all_f1"] is None or math.isnan(r["all_f1"]) else r["all_f1"],
                                    r["threshold"]))
    return best["threshold"], preds, rows


def genoformer_calls(run: str, region: str, threshold: float, folder: Path, rc_average: bool = False,
                     reference: Path = FASTA, bam: Path = BAM, calibration: Path | None = None
                     ) -> tuple[dict[str, Path], dict]:
    """Predict with the trained model in `run` over `region` of `bam` (with `rc_average`, averaged with the
    reverse strand) and export a VCF, QUAL and GQ scaled by `calibration` when given."""
    folder.mkdir(parents=True, exist_ok=True)
    preds, vcf = folder / "eval.h5", folder / "genoformer.vcf.gz"
    started = time.perf_counter()
    predict(PredictConfig(model=run, reference=str(reference), bam=str(bam), regions=[region], out=str(preds),
                          device="cpu", rc_average=rc_average, progress=False))
    info = {"threshold": threshold, "predict_seconds": time.perf_counter() - started}
    started = time.perf_counter()
    exported = export(ExportConfig(predictions=str(preds), vcf=str(vcf), threshold=threshold,
                                   calibration=calibration and str(calibration), progress=False),
                      command="benchmarks/quality/variant_quality.py")
    info["export"] = exported.get("vcf") | {"seconds": time.perf_counter() - started}
    return {"calibrated" if calibration else "uncalibrated": vcf}, info


def calibrate_on(predictions: Path, ex: SimulatedExample, threshold: float, folder: Path) -> tuple[Path, dict]:
    """Fit QUAL and GQ to the calls in `predictions` (of the simulated genome's validation contig)."""
    calibration = fit_calibration(str(predictions), str(ex.truth_vcf), str(ex.confident_bed), threshold=threshold)
    calibration.save(folder / "calibration.json")
    return folder / "calibration.json", {"qual": calibration.qual, "gq": calibration.gq, **calibration.fitted_on}


def _train(config: TrainConfig, steps: int) -> dict:
    trained = train(dataclasses.replace(config, max_steps=steps))
    return {"steps": steps, "train_seconds": trained["seconds"], "final_loss": trained["final_loss"],
            "bases_per_s": trained["bases_per_s"]}


def _compared(label: str, region: str, confident, folder: Path, model_vcfs: dict[str, Path], model_info: dict | None,
              with_allele_fraction: bool, truth: Path = TRUTH, fasta: Path = FASTA, bam: Path = BAM) -> dict:
    """Rows of genoformer (each of its VCFs: calibrated first) and the baselines on the same reads, region
    and truth."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [score(f"{label}, {name}", vcf, [region], confident, truth, fasta)
            for name, vcf in sorted(model_vcfs.items())]
    bcf_vcf, version = bcftools_calls(region, folder / "bcftools.vcf.gz", fasta, bam)
    rows.append(score(BCFTOOLS, bcf_vcf, [region], confident, truth, fasta))
    if with_allele_fraction:
        rows.append(score(ALLELE_FRACTION, allele_fraction_calls(region, folder / "af.vcf.gz"), [region],
                          confident))
    return {"region": region, "confident_bed": bool(confident), "genoformer": model_info, "bcftools": version,
            "rows": rows, "model_rows": len(model_vcfs)}


def _measure(args, folder: Path, seed: int, config: TrainConfig | None, steps: int, setting: str) -> Measurement:
    sub = folder / f"{setting}-seed{seed}-{time.monotonic_ns()}"
    sub.mkdir(parents=True)
    run = str(sub / "run")
    trained = None if config is None else _train(dataclasses.replace(config, out=run), steps)
    label = f"genoformer ({setting} training, {steps} steps)"
    parts, calibration = {}, None
    if setting == "simulated":  # calibrated on the validation contig, scored on the held-out one
        ex = simulated_example(args, folder, seed)
        _, validation, held_out = simulated_contigs(args)
        vcfs, info = {}, None
        if config is not None:
            threshold, preds, trained["validation"] = _threshold(args, run, validation, sub / "validation",
                                                                 ex.reference, ex.reads, ex.truth_vcf,
                                                                 ex.confident_bed)
            calibration, fitted = calibrate_on(preds, ex, threshold, sub / "validation")
            trained["calibration"] = fitted
            vcfs, info = genoformer_calls(run, held_out, threshold, sub / "held-out", args.rc_average,
                                          ex.reference, ex.reads, calibration)
        parts["held_out"] = _compared(label, held_out, ex.confident_bed, sub / "held-out", vcfs, info, False,
                                      ex.truth_vcf, ex.reference, ex.reads)
    region, confident = (EVAL_REGION, CONFIDENT) if setting == "real" else (ALL_REGION, None)
    vcfs, info = {}, None
    if config is not None:
        if setting == "real":
            threshold, _, trained["validation"] = _threshold(args, run, VAL_REGION, sub / "validation", FASTA, BAM,
                                                             TRUTH, None)
        vcfs, info = genoformer_calls(run, region, threshold, sub / "real", args.rc_average,
                                      calibration=calibration)
    parts["real"] = _compared(label, region, confident, sub / "real", vcfs, info, setting == "real")
    n_model = parts["real"]["model_rows"]
    base_rows = parts["real"]["rows"][n_model:]
    model_row = parts["real"]["rows"][0] if n_model else None  # calibrated where there is a calibration
    truth = base_rows[0]["all_tp"] + base_rows[0]["all_fn"]
    if setting == "real":
        metrics = [("F1, all variants, confident BED", "all_f1"), ("SNV F1", "snv_f1"), ("indel F1", "indel_f1"),
                   ("genotype concordance of true positives", "all_genotype_concordance")]
    else:  # recall alone rewards calling everything: precision (approximate here) is summarised too
        metrics = [(f"indel recall, real reads, all {truth} truth alleles", "indel_recall"),
                   ("indel F1 (approximate: truth incomplete outside the confident BED)", "indel_f1"),
                   ("SNV F1 (approximate)", "snv_f1"), ("insertion recall", "insertion_recall"),
                   ("deletion recall", "deletion_recall"),
                   ("genotype concordance of true positives", "all_genotype_concordance")]
    scores = [Measurement(name, model_row and model_row[key], {r["caller"]: r[key] for r in base_rows})
              for name, key in metrics]
    if setting == "simulated":
        held = parts["held_out"]["rows"]
        n_model = parts["held_out"]["model_rows"]
        scores += [Measurement(f"held-out simulated contig: {name}", held[0][key] if n_model else None,
                               {r["caller"]: r[key] for r in held[n_model:]})
                   for name, key in (("insertion recall", "insertion_recall"), ("deletion recall", "deletion_recall"),
                                     ("SNV recall", "snv_recall"), ("all F1", "all_f1"),
                                     ("genotype concordance", "all_genotype_concordance"))]
        if n_model:
            scores += [Measurement(f"held-out simulated contig: GQ calibration error ({unit})",
                                   held[0].get(key), {}, higher_is_better=False)
                       for unit, key in (("phred", "gq_calibration_error"),
                                         ("points of error rate", "gq_calibration_error_points"))]
    return dataclasses.replace(scores[0], also=scores[1:],
                               detail={"setting": setting, "training": trained, "parts": parts})


def _threshold(args, run: str, region: str, folder: Path, reference: Path, bam: Path, truth: Path,
               confident: Path | None) -> tuple[float, Path | None, list[dict]]:
    """--threshold, or (None) the one chosen on `region`: (threshold, the predictions there or None, scores)."""
    if args.threshold is not None:
        if confident is None:  # nothing else reads the validation predictions
            return args.threshold, None, []
        folder.mkdir(parents=True, exist_ok=True)
        preds = folder / "validation.h5"  # calibration fits these: made as the scored predictions are
        predict(PredictConfig(model=run, reference=str(reference), bam=str(bam), regions=[region], out=str(preds),
                              device="cpu", rc_average=args.rc_average, progress=False))
        return args.threshold, preds, []
    return choose_threshold(run, region, folder, reference, bam, truth, confident, args.rc_average)


def measure_real(args, folder: Path, seed: int, options: dict, steps: int) -> Measurement:
    config = None if args.baseline_only else variant_config(args, folder / "unused", seed, options, **real_inputs())
    return _measure(args, folder, seed, config, steps, "real")


def measure_simulated(args, folder: Path, seed: int, options: dict, steps: int) -> Measurement:
    config = None if args.baseline_only else variant_config(args, folder / "unused", seed, options,
                                                            **simulated_inputs(args, folder, seed))
    return _measure(args, folder, seed, config, steps, "simulated")


def probe_config_real(args, folder: Path, options: dict) -> TrainConfig:
    return variant_config(args, folder / "probe", 0, options, **real_inputs())


def probe_config_simulated(args, folder: Path, options: dict) -> TrainConfig:
    return variant_config(args, folder / "probe", 0, options, **simulated_inputs(args, folder, 0))


def difference_rows(rows: list[dict], n_model: int = 1) -> list[dict]:
    """genoformer (its first row) - each baseline (the rows after its `n_model`), for every ratio column."""
    model = rows[0]
    return [{"caller": f"genoformer - {r['caller']}",
             **{f"{kind}_{m}": minus(model[f"{kind}_{m}"], r[f"{kind}_{m}"]) for kind in KINDS
                for m in ("precision", "recall", "f1", "genotype_concordance")}}
            for r in rows[n_model:]]


def print_setting(setting: str, seed: int, run: Measurement, budget) -> None:
    columns = [("caller", "caller", "")]
    for kind, label in (("snv", "SNV"), ("insertion", "ins"), ("deletion", "del"), ("indel", "indel"), ("all", "all")):
        columns += [(f"{kind}_tp", f"{label} TP", "d"), (f"{kind}_fp", "FP", "d"), (f"{kind}_fn", "FN", "d"),
                    (f"{kind}_precision", "P", ".3f"), (f"{kind}_recall", "R", ".3f"),
                    (f"{kind}_f1", "F1", ".3f")]
    columns.append(("all_genotype_concordance", "GT conc.", ".3f"))
    for part, detail in run.detail["parts"].items():
        rows = detail["rows"]
        shown = rows + difference_rows(rows, detail["model_rows"]) if detail["model_rows"] else rows
        where = {"held_out": f"train on the simulated genome's first contigs, evaluate the held-out {detail['region']}",
                 "real": (f"train {TRAIN_REGION}, evaluate {EVAL_REGION} inside the confident BED" if setting == "real"
                          else f"train on the simulated genome only, evaluate {ALL_REGION} of the real reads, all "
                               "truth variants (no confident BED: precision approximate)")}[part]
        print(f"[{setting}, seed {seed}] {where} ({rows[0]['scored_bases'] or 0:,} bases); budget {budget}")
        print(table(shown, columns))
        for row in rows[:detail["model_rows"]]:
            if "qual_decile_precision" in row:
                deciles = " ".join(f"{p:.3f}" for p in row["qual_decile_precision"])
                print(f"  {row['caller']}: precision by QUAL decile (low to high) {deciles}; GQ calibration error "
                      f"{row['gq_calibration_error']:.1f} phred, {row['gq_calibration_error_points']:.2f} points of "
                      "error rate (bands with >= 20 calls)")


MEASURES = {"real": measure_real, "simulated": measure_simulated}
PROBES = {"real": probe_config_real, "simulated": probe_config_simulated}


def add_args(ap: argparse.ArgumentParser) -> None:
    """This benchmark's options (also read by ablation.py)."""
    ap.add_argument("--window", type=int, default=4096, help="training and prediction window in bases")
    ap.add_argument("--k", type=int, default=6, help="k-mer size (1: one token per base)")
    add_model_args(ap, d_model=64, batch_size=4)
    ap.add_argument("--class-weights", default="none", help="variant loss weights: none, balanced or w0,w1,w2")
    ap.add_argument("--threshold", type=parse_threshold, default=None,
                    help="export: P(non-ref) that calls a base, or 'validation' (default): the best of THRESHOLDS "
                         "on the validation region")
    ap.add_argument("--candidate-weight", type=float, default=1.0,
                    help="loss weight of bases whose reads show another allele (train --candidate-weight)")
    ap.add_argument("--no-stem", dest="stem", action="store_false", help="ablation: no per-base stem")
    ap.add_argument("--no-decoder", dest="decoder", action="store_false",
                    help="ablation: k x classes per token instead of the per-base decoder")
    ap.add_argument("--evidence-scaling", choices=EVIDENCE_SCALINGS, default="weighed",
                    help="read evidence into the stem (train --evidence-scaling)")
    ap.add_argument("--rc-augment", action="store_true", help="train on the reverse strand of half the windows")
    ap.add_argument("--rc-average", action="store_true", help="predict: average with the reverse strand")
    ap.add_argument("--sim-contigs", type=int, default=3,
                    help="simulated setting: contigs to simulate (>= 3; the last held out, the one before "
                         "it validates and calibrates, the rest train)")
    ap.add_argument("--sim-contig-length", type=int, default=500_000, help="simulated setting: bases a contig")
    ap.add_argument("--sim-coverage", type=float, default=50.0, help="simulated setting: read depth (this BAM: ~52x)")
    ap.add_argument("--sim-variant-rate", type=float, default=1 / 500, help="simulated setting: variants a base")
    ap.add_argument("--sim-indel-fraction", type=float, default=0.4,
                    help="simulated setting: share of variants that are indels (500 kb contig: ~400 indels)")


def parse_threshold(text: str) -> float | None:
    """A threshold in (0, 1], or None for "validation" (chosen on the validation region)."""
    if text == "validation":
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"threshold {text}: give a number in (0, 1] or 'validation'")
    return value


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap, "variant_quality", "6m")
    add_args(ap)
    ap.add_argument("--settings", default="real,simulated", help="comma-separated: real, simulated")
    return ap


def main() -> None:
    ap = parser()
    args = ap.parse_args()
    settings = args.settings.split(",")
    if not settings or set(settings) - set(SETTINGS):
        ap.error(f"--settings: choose from {', '.join(SETTINGS)} (got {args.settings})")
    if args.sim_contigs < 3:
        ap.error(f"--sim-contigs: at least 3 (training, validation, held out), got {args.sim_contigs}")
    check_data(FASTA, BAM, TRUTH, CONFIDENT)
    torch.set_num_threads(args.threads)
    tmp = work_dir(args.keep)
    folder = Path(args.keep or tmp.name)
    results = {}
    try:
        for setting in settings:
            steps, per_step = (0, None) if args.baseline_only else \
                steps_for(args.budget, PROBES[setting](args, folder, {}), folder)
            runs = [MEASURES[setting](args, folder, seed, {}, steps) for seed in args.seeds]
            for seed, run in zip(args.seeds, runs):
                print_setting(setting, seed, run, args.budget)
            results[setting] = {"steps": steps, "calibrated_s_per_step": per_step,
                                "summary": print_summary(runs, args.seeds),
                                "runs": [dataclasses.asdict(r) for r in runs]}
    finally:
        if tmp is not None:
            tmp.cleanup()
    model = {k: getattr(args, k) for k in ("window", "k", "d_model", "depth", "heads", "bucket_size", "n_hashes",
                                             "attention", "lr", "batch_size", "class_weights", "candidate_weight",
                                             "threshold",
                                             "stem", "decoder", "evidence_scaling", "rc_augment", "rc_average",
                                             "sim_contigs", "sim_contig_length", "sim_coverage", "sim_variant_rate",
                                             "sim_indel_fraction")}
    save_json(args.json, {"benchmark": "variant_quality", "budget": str(args.budget), "machine": machine(),
                          "train_region": TRAIN_REGION, "val_region": VAL_REGION, "eval_region": EVAL_REGION, "all_region": ALL_REGION,
                          "thresholds": THRESHOLDS, "model": model, "seeds": args.seeds, "baseline_only": args.baseline_only,
                          "command": " ".join(sys.argv), "settings": results})


if __name__ == "__main__":
    main()
