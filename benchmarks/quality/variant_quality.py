"""Variant calling quality on NA12878 chr20: small genoformer models next to plain callers, two settings.

Every caller sees the same reads (DeepVariant's NA12878 chr20:10.0-10.1 Mb BAM) and is scored by
the same `genoformer.evaluate.variants` against the GIAB truth (variant_callers.py holds the
plain callers and the scorer):

- real: a small `variant` model (LSH attention by default) trains on chr20:10,010,532-10,100,000
  (no validation: nothing is chosen on the scored region), then `predict` over the evaluation
  region chr20:10,000,847-10,010,531 -> `export` (VCF; --threshold) -> `evaluate` inside the
  confident BED (49 truth variants). Headline: F1 over all variants, next to bcftools and the
  allele-fraction rule on the same region.
- simulated: a model trained only on a simulated genome (`genoformer simulate`, --sim-* options:
  by default 2 x 1 Mb, ~50x, insert ~N(320, 70) like this BAM, one variant per 500 bp, seeded by
  the run's seed) predicts over chr20:10,000,001-10,100,000 of the real reads and is scored
  against ALL the truth variants there (221 records; no confident BED). Recall is exact;
  precision is approximate, since outside the confident BED the truth is incomplete and some
  "false positives" may be real. bcftools is scored on the same terms. Genotype concordance:
  the share of true positives with the truth's zygosity.

Each table prints genoformer - baseline for precision, recall, F1 (and concordance).
The model's defaults are k 6 and window 4,096; on the real setting `--k 1 --window 1024
--class-weights balanced` is what learns within minutes (docs/benchmarks.md).

    python benchmarks/quality/variant_quality.py [--settings real,simulated] [--budget 6m|300]
        [--seeds 0,1,2] [--k 1 --window 1024] [--class-weights balanced] [--baseline-only] [--json PATH]
        [--no-stem] [--no-decoder] [--rc-augment] [--rc-average]
"""
from __future__ import annotations

import argparse
import dataclasses
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

from genoformer.predict.export import ExportConfig, export
from genoformer.predict.runner import PredictConfig, predict
from genoformer.simulate.genome import SimulatedExample, simulate

TRAIN_REGION = "chr20:10,010,532-10,100,000"
EVAL_REGION = "chr20:10,000,847-10,010,531"
ALL_REGION = "chr20:10,000,001-10,100,000"  # every truth variant (10,000,117-10,099,832)
BCFTOOLS, ALLELE_FRACTION = "bcftools call -mv", "allele fraction (SNV only)"
SETTINGS = ("real", "simulated")
SIM_INSERT = (320, 70)  # mean, sd of the simulated fragments: this BAM's proper pairs have median 319, sd 73


def variant_config(args, out: Path, seed: int, options: dict, **inputs) -> TrainConfig:
    model = dataclasses.replace(model_options(args), stem=args.stem, decoder=args.decoder)
    config = TrainConfig(task="variant", window=args.window, k=args.k, model=model, lr=args.lr,
                         batch_size=args.batch_size, class_weights=args.class_weights, rc_augment=args.rc_augment,
                         max_steps=1, ckpt_every=10 ** 9, val_every=10 ** 9, seed=seed, device="cpu", out=str(out),
                         progress=False, **inputs)
    return with_options(config, options)


def real_inputs() -> dict:
    return {"reference": str(FASTA), "bam": str(BAM), "truth_vcf": str(TRUTH), "train_regions": [TRAIN_REGION]}


def simulated_inputs(args, folder: Path, seed: int) -> dict:
    """The simulated training example of `seed` (written once into `folder`)."""
    out = folder / f"simulated-seed{seed}"
    ex = SimulatedExample.in_dir(out) if (out / "manifest.json").is_file() else simulate(
        out, seed, contigs=[(f"sim{i + 1}", args.sim_contig_length) for i in range(args.sim_contigs)],
        coverage=args.sim_coverage, insert_mean=SIM_INSERT[0], insert_sd=SIM_INSERT[1],
        variant_rate=args.sim_variant_rate)
    return {"reference": str(ex.reference), "bam": str(ex.reads), "truth_vcf": str(ex.truth_vcf),
            "confident_bed": str(ex.confident_bed)}


def genoformer_calls(config: TrainConfig, steps: int, region: str, threshold: float, folder: Path,
                     rc_average: bool = False) -> tuple[Path, dict]:
    """Train `config` for `steps`, then predict over `region` of the real reads (with `rc_average`, averaged
    with the reverse strand) and export a VCF."""
    config = dataclasses.replace(config, max_steps=steps)
    trained = train(config)
    preds, vcf = folder / "eval.h5", folder / "genoformer.vcf.gz"
    started = time.perf_counter()
    predict(PredictConfig(model=config.out, reference=str(FASTA), bam=str(BAM), regions=[region], out=str(preds),
                          device="cpu", rc_average=rc_average, progress=False))
    exported = export(ExportConfig(predictions=str(preds), vcf=str(vcf), threshold=threshold, progress=False),
                      command="benchmarks/quality/variant_quality.py")
    info = {"steps": steps, "train_seconds": trained["seconds"], "final_loss": trained["final_loss"],
            "bases_per_s": trained["bases_per_s"], "predict_export_seconds": time.perf_counter() - started,
            "export": exported.get("vcf")}
    return vcf, info


def _measure(args, folder: Path, seed: int, config: TrainConfig | None, steps: int, setting: str) -> Measurement:
    region, confident = (EVAL_REGION, CONFIDENT) if setting == "real" else (ALL_REGION, None)
    sub = folder / f"{setting}-seed{seed}-{time.monotonic_ns()}"
    sub.mkdir(parents=True)
    model_row, info = None, None
    if config is not None:
        vcf, info = genoformer_calls(dataclasses.replace(config, out=str(sub / "run")), steps, region,
                                     args.threshold, sub, args.rc_average)
        model_row = score(f"genoformer ({setting} training, {steps} steps)", vcf, [region], confident)
    bcf_vcf, version = bcftools_calls(region, sub / "bcftools.vcf.gz")
    base_rows = [score(BCFTOOLS, bcf_vcf, [region], confident)]
    if setting == "real":
        base_rows.append(score(ALLELE_FRACTION, allele_fraction_calls(region, sub / "af.vcf.gz"), [region],
                               confident))
    truth = base_rows[0]["all_tp"] + base_rows[0]["all_fn"]
    if setting == "real":
        metrics = [("F1, all variants, confident BED", "all_f1"), ("SNV F1", "snv_f1"), ("indel F1", "indel_f1"),
                   ("genotype concordance of true positives", "all_genotype_concordance")]
    else:  # recall alone rewards calling everything: precision (approximate here) is summarised too
        metrics = [(f"recall, all {truth} truth alleles", "all_recall"),
                   ("precision (approximate: truth incomplete outside the confident BED)", "all_precision"),
                   ("F1 (approximate)", "all_f1"), ("genotype concordance of true positives", "all_genotype_concordance")]
    scores = [Measurement(name, model_row and model_row[key], {r["caller"]: r[key] for r in base_rows})
              for name, key in metrics]
    return dataclasses.replace(scores[0], also=scores[1:],
                               detail={"setting": setting, "region": region, "confident_bed": bool(confident),
                                       "genoformer": info, "bcftools": version,
                                       "rows": ([model_row] if model_row else []) + base_rows})


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


def difference_rows(rows: list[dict]) -> list[dict]:
    """genoformer - each baseline, for every ratio column."""
    model = rows[0]
    return [{"caller": f"genoformer - {r['caller']}",
             **{f"{kind}_{m}": minus(model[f"{kind}_{m}"], r[f"{kind}_{m}"]) for kind in KINDS
                for m in ("precision", "recall", "f1", "genotype_concordance")}}
            for r in rows[1:]]


def print_setting(setting: str, seed: int, run: Measurement, budget) -> list[dict]:
    rows = run.detail["rows"]
    shown = rows + difference_rows(rows) if run.genoformer is not None else rows
    columns = [("caller", "caller", "")]
    for kind, label in (("snv", "SNV"), ("indel", "indel"), ("all", "all")):
        columns += [(f"{kind}_tp", f"{label} TP", "d"), (f"{kind}_fp", "FP", "d"), (f"{kind}_fn", "FN", "d"),
                    (f"{kind}_precision", "P", ".3f"), (f"{kind}_recall", "R", ".3f"),
                    (f"{kind}_f1", "F1", ".3f")]
    columns.append(("all_genotype_concordance", "GT conc.", ".3f"))
    where = (f"train {TRAIN_REGION}, evaluate {EVAL_REGION} inside the confident BED" if setting == "real" else
             f"train on the simulated genome only, evaluate {ALL_REGION}, all truth variants (no confident BED: "
             "precision approximate)")
    print(f"[{setting}, seed {seed}] {where} ({rows[0]['scored_bases']:,} bases); budget {budget}")
    print(table(shown, columns))
    return shown


MEASURES = {"real": measure_real, "simulated": measure_simulated}
PROBES = {"real": probe_config_real, "simulated": probe_config_simulated}


def add_args(ap: argparse.ArgumentParser) -> None:
    """This benchmark's options (also read by ablation.py)."""
    ap.add_argument("--window", type=int, default=4096, help="training and prediction window in bases")
    ap.add_argument("--k", type=int, default=6, help="k-mer size (1: one token per base)")
    add_model_args(ap, d_model=64, batch_size=4)
    ap.add_argument("--class-weights", default="none", help="variant loss weights: none, balanced or w0,w1,w2")
    ap.add_argument("--threshold", type=float, default=0.5, help="export: P(non-ref) that calls a base")
    ap.add_argument("--no-stem", dest="stem", action="store_false", help="ablation: no per-base stem")
    ap.add_argument("--no-decoder", dest="decoder", action="store_false",
                    help="ablation: k x classes per token instead of the per-base decoder")
    ap.add_argument("--rc-augment", action="store_true", help="train on the reverse strand of half the windows")
    ap.add_argument("--rc-average", action="store_true", help="predict: average with the reverse strand")
    ap.add_argument("--sim-contigs", type=int, default=2, help="simulated setting: contigs to simulate")
    ap.add_argument("--sim-contig-length", type=int, default=1_000_000, help="simulated setting: bases a contig")
    ap.add_argument("--sim-coverage", type=float, default=50.0, help="simulated setting: read depth (this BAM: ~52x)")
    ap.add_argument("--sim-variant-rate", type=float, default=1 / 500, help="simulated setting: variants a base")


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
                                             "attention", "lr", "batch_size", "class_weights", "threshold",
                                             "stem", "decoder", "rc_augment", "rc_average",
                                             "sim_contigs", "sim_contig_length", "sim_coverage", "sim_variant_rate")}
    save_json(args.json, {"benchmark": "variant_quality", "budget": str(args.budget), "machine": machine(),
                          "train_region": TRAIN_REGION, "eval_region": EVAL_REGION, "all_region": ALL_REGION,
                          "model": model, "seeds": args.seeds, "baseline_only": args.baseline_only,
                          "command": " ".join(sys.argv), "settings": results})


if __name__ == "__main__":
    main()
