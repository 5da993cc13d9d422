"""Variant calling quality on NA12878 chr20: a small genoformer model next to two plain callers.

All three callers see the same reads (DeepVariant's NA12878 chr20:10.0-10.1 Mb BAM) and are
scored by the same `genoformer.evaluate.variants` against the GIAB truth inside the confident BED of the
evaluation region chr20:10,000,847-10,010,531 (49 truth variants):

- genoformer: a small `variant` model (LSH attention by default) trained on
  chr20:10,010,532-10,100,000 (no validation: nothing is chosen on the scored region), then
  `predict` over the evaluation region -> `export` (VCF; default threshold 0.5) -> `evaluate`;
- allele fraction: from `Alignments.evidence`, each base whose most frequent non-reference base
  (A/C/G/T counts, base quality >= 13) is at least 20 % of the depth is het, at least 80 %
  hom-alt, with depth >= 5; SNVs only (the rule has no indels);
- bcftools: `bcftools mpileup -f REF BAM -r REGION | bcftools call -mv` (multiallelic caller,
  variant sites only), unfiltered; pysam's bundled bcftools, so no bcftools program is needed.

The model's defaults are k 6 and window 4,096; on this set `--k 1 --window 1024
--class-weights balanced` is what learns within minutes (docs/benchmarks.md).

    python benchmarks/quality/variant_quality.py [--budget 6m|300] [--k 1 --window 1024]
        [--class-weights balanced] [--attention lsh] [--json PATH]
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import pysam
import torch
from quality_common import (
    BAM,
    CONFIDENT,
    FASTA,
    TRUTH,
    add_common_args,
    add_model_args,
    check_data,
    machine,
    model_options,
    save_json,
    steps_for,
    table,
    work_dir,
)

from genoformer.coords import parse_region
from genoformer.evaluate.variants import EvaluateConfig, evaluate
from genoformer.predict.export import ExportConfig, export
from genoformer.io.alignments import Alignments
from genoformer.io.evidence import BASE_COLUMNS, Evidence
from genoformer.io.fasta import Reference
from genoformer.predict.runner import PredictConfig, predict
from genoformer.train import TrainConfig, train

TRAIN_REGION = "chr20:10,010,532-10,100,000"
EVAL_REGION = "chr20:10,000,847-10,010,531"
MIN_DEPTH, HET_FRACTION, HOM_FRACTION = 5, 0.2, 0.8


def model_config(args, out: Path) -> TrainConfig:
    return TrainConfig(task="variant", reference=str(FASTA), bam=str(BAM), truth_vcf=str(TRUTH),
                       train_regions=[TRAIN_REGION], window=args.window, k=args.k,
                       model=dataclasses.replace(model_options(args), stem=args.stem, decoder=args.decoder),
                       lr=args.lr, batch_size=args.batch_size, class_weights=args.class_weights,
                       rc_augment=args.rc_augment, max_steps=1,
                       ckpt_every=10 ** 9, val_every=10 ** 9, seed=args.seed, device="cpu", out=str(out),
                       progress=False)


def genoformer_calls(args, folder: Path) -> tuple[Path, dict]:
    config = model_config(args, folder / "run")
    steps, per_step = steps_for(args.budget, config, folder)
    config.max_steps = steps
    trained = train(config)
    preds, vcf = folder / "eval.h5", folder / "genoformer.vcf.gz"
    started = time.perf_counter()
    predict(PredictConfig(model=str(folder / "run"), reference=str(FASTA), bam=str(BAM), regions=[EVAL_REGION],
                          out=str(preds), device="cpu", rc_average=args.rc_average, progress=False))
    exported = export(ExportConfig(predictions=str(preds), vcf=str(vcf), threshold=args.threshold, progress=False),
                      command="benchmarks/quality/variant_quality.py")
    info = {"steps": steps, "calibrated_s_per_step": per_step, "train_seconds": trained["seconds"],
            "final_loss": trained["final_loss"], "bases_per_s": trained["bases_per_s"],
            "predict_export_seconds": time.perf_counter() - started, "export": exported.get("vcf")}
    return vcf, info


def allele_fraction_calls(region: str, out: Path) -> Path:
    """The plain rule of the module docstring, written as a VCF (sample NA12878)."""
    ref = Reference(FASTA)
    iv = parse_region(region, ref.contigs)
    evidence = Alignments(str(BAM), ref).evidence(iv.contig, iv.start, iv.end)
    bases = np.frombuffer(b"ACGT", np.uint8)
    ref_codes = np.frombuffer(ref.fetch_interval(iv).tobytes().upper(), np.uint8)
    counts = evidence[:, list(BASE_COLUMNS)]
    depth = evidence[:, Evidence.depth]
    alt_counts = np.where(bases[None, :] == ref_codes[:, None], -1, counts)  # the reference base never wins
    alt = alt_counts.argmax(1)
    fraction = np.where(depth > 0, alt_counts.max(1) / np.maximum(depth, 1), 0)
    called = (depth >= MIN_DEPTH) & (fraction >= HET_FRACTION) & np.isin(ref_codes, bases)
    header = pysam.VariantHeader()
    for name, length in ref.contigs.items():
        header.contigs.add(name, length=length)
    header.add_meta("FORMAT", items=[("ID", "GT"), ("Number", 1), ("Type", "String"), ("Description", "Genotype")])
    header.add_meta("INFO", items=[("ID", "AF"), ("Number", "A"), ("Type", "Float"),
                                   ("Description", "Alt base count / depth")])
    header.add_sample("NA12878")
    with pysam.VariantFile(str(out), "wz", header=header) as vcf:
        for i in np.flatnonzero(called):
            rec = vcf.new_record(contig=iv.contig, start=iv.start + int(i), stop=iv.start + int(i) + 1,
                                 alleles=(chr(ref_codes[i]), chr(bases[alt[i]])), info={"AF": float(fraction[i])})
            rec.samples["NA12878"]["GT"] = (1, 1) if fraction[i] >= HOM_FRACTION else (0, 1)
            vcf.write(rec)
    pysam.tabix_index(str(out), preset="vcf", force=True)
    return out


def bcftools_calls(region: str, out: Path) -> tuple[Path, str]:
    """pysam's bundled bcftools (no bcftools program needed): mpileup to a BCF, then call -mv."""
    from pysam import bcftools

    pileup = out.with_name(out.name.replace(".vcf.gz", ".mpileup.bcf"))
    bcftools.mpileup("-f", str(FASTA), "-r", region.replace(",", ""), "-Ob", "-o", str(pileup), str(BAM),
                     catch_stdout=False)
    bcftools.call("-mv", "-Oz", "-o", str(out), str(pileup), catch_stdout=False)
    pysam.tabix_index(str(out), preset="vcf", force=True)
    with pysam.VariantFile(str(out)) as vcf:  # the call's own record of its version
        version = next(f"bcftools {r.value}" for r in vcf.header.records if r.key == "bcftools_callVersion")
    return out, version


def score(name: str, vcf: Path) -> dict:
    result = evaluate(EvaluateConfig(calls=str(vcf), truth_vcf=str(TRUTH), confident_bed=str(CONFIDENT),
                                     regions=[EVAL_REGION], reference=str(FASTA)))
    row = {"caller": name, "scored_bases": result.scored_bases}
    for kind in ("snv", "indel"):
        c = result.counts[kind]
        row |= {f"{kind}_{k}": v for k, v in c.as_dict().items()}
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap, "variant_quality", "6m")
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
    args = ap.parse_args()
    check_data(FASTA, BAM, TRUTH, CONFIDENT)
    torch.set_num_threads(args.threads)
    tmp = work_dir(args.keep)
    folder = Path(args.keep or tmp.name)
    try:
        vcf, info = genoformer_calls(args, folder)
        rows = [score(f"genoformer ({args.attention}, {info['steps']} steps)", vcf),
                score("allele fraction (SNV only)", allele_fraction_calls(EVAL_REGION, folder / "af.vcf.gz"))]
        bcf_vcf, bcf_version = bcftools_calls(EVAL_REGION, folder / "bcftools.vcf.gz")
        rows.append(score("bcftools call -mv", bcf_vcf))
    finally:
        if tmp is not None:
            tmp.cleanup()
    columns = [("caller", "caller", "")]
    for kind, label in (("snv", "SNV"), ("indel", "indel")):
        columns += [(f"{kind}_tp", f"{label} TP", "d"), (f"{kind}_fp", "FP", "d"), (f"{kind}_fn", "FN", "d"),
                    (f"{kind}_precision", "P", ".3f"), (f"{kind}_recall", "R", ".3f"), (f"{kind}_f1", "F1", ".3f")]
    print(f"train {TRAIN_REGION}, evaluate {EVAL_REGION} inside the confident BED "
          f"({rows[0]['scored_bases']:,} bases); budget {args.budget}")
    print(table(rows, columns))
    model = {k: getattr(args, k) for k in ("window", "k", "d_model", "depth", "heads", "bucket_size", "n_hashes",
                                             "attention", "lr", "batch_size", "class_weights", "threshold", "seed",
                                             "stem", "decoder", "rc_augment", "rc_average")}
    save_json(args.json, {"benchmark": "variant_quality", "budget": str(args.budget), "machine": machine(),
                          "train_region": TRAIN_REGION, "eval_region": EVAL_REGION, "model": model,
                          "genoformer": info, "bcftools": bcf_version,
                          "allele_fraction_rule": {"min_depth": MIN_DEPTH, "het": HET_FRACTION,
                                                   "hom_alt": HOM_FRACTION},
                          "command": " ".join(sys.argv), "rows": rows})


if __name__ == "__main__":
    main()
