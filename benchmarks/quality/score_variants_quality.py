"""Variant-effect quality: does `score-variants` rank motif-breaking SNVs above motif-neutral ones?

`genoformer simulate` plants TATA boxes (TATAAAAG) and CTCF-like cores (CCGCGNGGNGGCAG) and lists
them in motifs.bed. A small `pattern` model learns that track (motifs.bed as --bed) on the first
contigs; on held-out contigs, every SNV at a fixed (non-N) base of a planted motif is motif-breaking,
and SNVs at random bases at least 50 bp from any motif are neutral. Each is scored with
`genoformer.apply.variants` (diff: p_alt - p_ref of the motif class at the variant base) and ranked
by -diff: AUROC of breaking vs neutral (goal >= 0.9), per motif and over all, also with
--rc-average; the scoring rate (variants/s, CPU) is reported with it.

Baseline in the same run (window_baseline.py): L2 logistic regression on the one-hot bases of a
+-15-base window, fitted on the same training contigs and motifs.bed track to predict whether a base
lies in a motif, scores each SNV the same way (diff of the motif probability at the variant base,
ranked by -diff); "genoformer - baseline" is the model's -diff row minus the baseline's, per seed.

    python benchmarks/quality/score_variants_quality.py [--budget 600|8m] [--seeds 0,1,2] [--contigs 50 --held-out 10]
"""
from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch
from quality_common import (TrainConfig, add_common_args, add_model_args, machine, minus, model_options, save_json,
                            spread, steps_for, table, train, work_dir)
from window_baseline import VALIDATION_CONTIGS, contig_data, fit_motif_model, score_snvs

from genoformer.apply.variants import ScoreConfig, score_variants
from genoformer.simulate.genome import MOTIFS, simulate
from genoformer.train.metrics import auroc

NEUTRAL_DISTANCE = 50  # bases between a neutral SNV and the nearest motif
_COMPLEMENT = str.maketrans("ACGTN", "TGCAN")


def snvs(example, held_out: list[str], rng: np.random.Generator) -> list[tuple[str, int, str, str, str]]:
    """(contig, 0-based position, ref, alt, kind) where kind is a motif name or 'neutral'."""
    import pysam

    seqs = {}
    with pysam.FastaFile(str(example.reference)) as fa:
        for name in held_out:
            seqs[name] = fa.fetch(name).upper()
    motifs = [line.split("\t") for line in example.motifs_bed.read_text().splitlines()]
    motifs = [(c, int(s), int(e), name, strand) for c, s, e, name, _, strand in motifs if c in seqs]
    out, near = [], {c: np.zeros(len(s), bool) for c, s in seqs.items()}
    for contig, start, end, name, strand in motifs:
        pattern = MOTIFS[name] if strand == "+" else MOTIFS[name][::-1].translate(_COMPLEMENT)
        for i, letter in enumerate(pattern):
            if letter != "N":  # a fixed base: any change breaks the motif
                ref = seqs[contig][start + i]
                out.append((contig, start + i, ref, str(rng.choice([b for b in "ACGT" if b != ref])), name))
        near[contig][max(start - NEUTRAL_DISTANCE, 0):end + NEUTRAL_DISTANCE] = True
    n_breaking = len(out)
    candidates = [(c, p) for c, s in seqs.items() for p in range(len(s)) if not near[c][p] and s[p] in "ACGT"]
    for k in rng.choice(len(candidates), size=2 * n_breaking, replace=False):
        contig, p = candidates[k]
        ref = seqs[contig][p]
        out.append((contig, p, ref, str(rng.choice([b for b in "ACGT" if b != ref])), "neutral"))
    return out


def write_vcf(path: Path, example, variants) -> Path:
    import pysam

    with pysam.FastaFile(str(example.reference)) as fa:
        header = [f"##contig=<ID={n},length={fa.get_reference_length(n)}>" for n in fa.references]
    lines = ["##fileformat=VCFv4.2", *header, "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO"]
    lines += [f"{c}\t{p + 1}\t{kind}_{i}\t{ref}\t{alt}\t.\t.\t." for i, (c, p, ref, alt, kind) in enumerate(variants)]
    path.write_text("\n".join(lines) + "\n")
    return path


def rank(rows: list[dict], key: str) -> dict[str, float]:
    """AUROC of -score: each motif's breaking SNVs (and all of them) against the neutral ones."""
    kind = np.array([r["id"].rsplit("_", 1)[0] for r in rows])
    score = -np.array([float(r[key]) for r in rows])
    neutral = kind == "neutral"
    out = {"all motifs": auroc(~neutral, score)}
    for name in MOTIFS:
        keep = neutral | (kind == name)
        out[name] = auroc(kind[keep] == name, score[keep])
    return out


def baseline(example, train_names: list[str], variants: list[tuple], seed: int) -> tuple[dict, dict]:
    """The window logistic regression's AUROC row (-diff) and what to keep of its fit."""
    start = time.perf_counter()
    fit, val = train_names[:-VALIDATION_CONTIGS], train_names[-VALIDATION_CONTIGS:]
    model = fit_motif_model(contig_data(example.reference, example.motifs_bed, fit),
                            contig_data(example.reference, example.motifs_bed, val), seed=seed)
    diffs = score_snvs(model, example.reference, variants)
    aurocs = rank([{"id": f"{v[4]}_{i}", "diff": d} for i, (v, d) in enumerate(zip(variants, diffs))], "diff")
    detail = {"l2": model.l2, "grid": model.grid, "fit_bases": model.fit_bases,
              "background_kept": model.background_kept, "fit_contigs": len(fit), "validation_contigs": val,
              "seconds": time.perf_counter() - start}
    return aurocs, detail


def run(args, folder: Path, seed: int) -> dict:
    """One seed: simulate, train, score with and without --rc-average, fit and score the baseline; the AUROC rows."""
    folder.mkdir(parents=True, exist_ok=True)
    names = [f"c{i:03d}" for i in range(args.contigs)]
    example = simulate(folder / "example", seed=seed, contigs=[(n, 10_000) for n in names], coverage=0.1,
                       force=True)
    train_names, held_out = names[:-args.held_out], names[-args.held_out:]
    config = TrainConfig(task="pattern", reference=str(example.reference), bed=[str(example.motifs_bed)],
                         train_regions=train_names, window=args.window, k=args.k, stride=args.stride,
                         model=model_options(args), lr=args.lr, batch_size=args.batch_size, max_steps=1,
                         val_every=10 ** 9, ckpt_every=10 ** 9, seed=seed, device="cpu", progress=False,
                         out=str(folder / "run"))
    config.max_steps, _ = steps_for(args.budget, config, folder)
    trained = train(config)
    variants = snvs(example, held_out, np.random.default_rng(seed))
    vcf = write_vcf(folder / "snvs.vcf", example, variants)
    results, rows = {}, []
    for rc in (False, True):
        summary = score_variants(ScoreConfig(model=config.out, reference=str(example.reference), vcf=str(vcf),
                                             out=str(folder / f"scores_rc{int(rc)}"), rc_average=rc,
                                             device="cpu", progress=False, force=True))
        with open(f"{folder}/scores_rc{int(rc)}.tsv") as fh:
            scored = list(csv.DictReader(fh, delimiter="\t"))
        for key in ("diff_motifs", "lor_motifs"):
            aurocs = rank(scored, key)
            results[f"{key}{' rc' if rc else ''}"] = aurocs
            rows.append({"seed": seed, "score": f"-{key.split('_')[0]}" + (" (rc-average)" if rc else ""), **aurocs,
                         "variants_per_s": summary["variants_per_s"]})
    base, base_detail = baseline(example, train_names, variants, seed)
    rows.append({"seed": seed, "score": "baseline -diff (window logistic)", **base, "variants_per_s": None})
    rows.append({"seed": seed, "score": "genoformer - baseline (-diff)", "variants_per_s": None,
                 **{k: minus(results["diff_motifs"][k], base[k]) for k in base}})
    counts = {kind: sum(v[4] == kind for v in variants) for kind in [*MOTIFS, "neutral"]}
    print(f"seed {seed}: pattern model ({args.attention}, d_model {args.d_model}, depth {args.depth}, "
          f"k {args.k}/{args.stride}, window {args.window}), {trained['step']} steps on {len(train_names)} contigs; "
          f"SNVs on {args.held_out} held-out contigs: {counts}; baseline l2 {base_detail['l2']:g}, "
          f"fitted in {base_detail['seconds']:.0f} s", flush=True)
    return {"seed": seed, "steps": trained["step"], "train_seconds": trained["seconds"], "snvs": counts,
            "auroc": results | {"baseline diff": base}, "baseline": base_detail, "rows": rows}


def summary(runs: list[dict]) -> list[dict]:
    """Per score and per AUROC column (all motifs, each motif) and the scoring rate: mean, min, max over seeds."""
    out = []
    for i, first in enumerate(runs[0]["rows"]):
        for key in ("all motifs", *MOTIFS, "variants_per_s"):
            values = spread([r["rows"][i][key] for r in runs])
            if values["n"]:  # the baseline rows have no scoring rate
                out.append({"score": first["score"], "of": f"AUROC {key}" if key != "variants_per_s" else "variants/s",
                            **values})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap, "score_variants_quality", "600", baselines=False)
    # 3-mers every base and local attention: at 300 steps 6-mers every 3 bases had learnt nothing (AUROC 0.51)
    add_model_args(ap, d_model=64, depth=2, bucket_size=16, attention="local", batch_size=32)
    ap.set_defaults(lr=3e-3)
    ap.add_argument("--k", type=int, default=3)
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--contigs", type=int, default=50, help="10 kb contigs simulated (each gets 2 of each motif)")
    ap.add_argument("--held-out", type=int, default=10, help="of them, the last N are scored, not trained on")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    runs = []
    for seed in args.seeds:
        tmp = work_dir(args.keep)
        folder = Path(args.keep or tmp.name) / f"seed{seed}"
        try:
            runs.append(run(args, folder, seed))
        finally:
            if tmp is not None:
                tmp.cleanup()
    columns = [("seed", "seed", "d"), ("score", "score", "")] + \
        [(k, f"AUROC {k}", ".3f") for k in ("all motifs", *MOTIFS)] + [("variants_per_s", "variants/s", ".1f")]
    print(table([row for r in runs for row in r["rows"]], columns))
    rows = summary(runs)
    print(f"over seeds {', '.join(map(str, args.seeds))} (AUROC goal >= 0.9)")
    print(table(rows, [("score", "score", ""), ("of", "measure", ""), ("n", "seeds", "d"), ("mean", "mean", ".3f"),
                       ("min", "min", ".3f"), ("max", "max", ".3f")]))
    save_json(args.json, {"benchmark": "score_variants_quality", "machine": machine(), "budget": str(args.budget),
                          "model": {k: getattr(args, k) for k in ("k", "stride", "window", "d_model", "depth", "heads",
                                                                   "bucket_size", "n_hashes", "attention", "lr",
                                                                   "batch_size")},
                          "per_base": "stem + decoder (train's default)", "contigs": args.contigs,
                          "held_out": args.held_out, "seeds": args.seeds, "runs": runs, "summary": rows, "goal": 0.9,
                          "command": " ".join(sys.argv)})


if __name__ == "__main__":
    main()
