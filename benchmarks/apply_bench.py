"""Throughput of applying models on CPU: score-variants, predict --sequences, attribute (ISM).

variants   SNVs scored per second by `score-variants` (RANDOM-weight pattern models of CPU-recipe
           size: speed does not depend on what the weights learned), with and without --rc-average.
           The random models have the per-base stem and decoder, as `train` builds them by default
           (--legacy-head: the k x classes head of models from before them).
sequences  sequences labelled per second by `predict --sequences`: a small classify model trained a
           few hundred steps on the shipped Genomic Benchmarks promoter CSV (seeded 80/20 split, as
           benchmarks/quality/classify_quality.py), then run over all 9,034 sequences; its held-out
           accuracy is reported beside it.
ism        wall time of in-silico mutagenesis over a region (default 2 kb: 6,000 changes) by
           `attribute --method ism` for CPU-recipe-sized models (random weights); a model whose
           layers are all local attention reruns only the token blocks a change reaches.
           --ism-bases shortens the region for slow models; the 2 kb time is then extrapolated
           from the measured time per window and the windows a 2 kb run passes, and marked so.

    python benchmarks/apply_bench.py [--parts variants,sequences,ism] [--variants 200] [--threads 2] [--json PATH]
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "quality"))
from quality_common import PROMOTERS, RESULTS, TrainConfig, machine, save_json, table, train  # noqa: E402

from genoformer.apply.attribute_run import AttributeConfig, run_attribute  # noqa: E402
from genoformer.apply.sequences import SequencesConfig, predict_sequences  # noqa: E402
from genoformer.apply.variants import ScoreConfig, score_variants  # noqa: E402
from genoformer.model.checkpoint import save_checkpoint  # noqa: E402
from genoformer.model.config import ReformerConfig  # noqa: E402
from genoformer.model.heads import GenoModel  # noqa: E402
from genoformer.model.per_base import LEGACY, PerBaseConfig  # noqa: E402
from genoformer.simulate.genome import simulate  # noqa: E402
from genoformer.tokenize import KmerTokenizer  # noqa: E402

# CPU-recipe sizes: the quickstart's (d_model 64, depth 2, k 1, window 1536, LSH bucket 32 x 2 hashes), and
# variants of it with local attention, 6-mer tokens, and d_model 128 / depth 4
SHAPES = [
    {"name": "quickstart: d64 x2, k1, lsh", "d_model": 64, "depth": 2, "k": 1, "stride": 1, "attention": "lsh"},
    {"name": "d64 x2, k1, local", "d_model": 64, "depth": 2, "k": 1, "stride": 1, "attention": "local"},
    {"name": "d64 x2, k6/3, lsh", "d_model": 64, "depth": 2, "k": 6, "stride": 3, "attention": "lsh"},
    {"name": "d128 x4, k6/3, local", "d_model": 128, "depth": 4, "k": 6, "stride": 3, "attention": "local"},
    # pipelines/pattern-cpu.yaml's shape (its window is 4,096; the benchmark's window is WINDOW)
    {"name": "pattern-cpu: d64 x2, k6, local", "d_model": 64, "depth": 2, "k": 6, "stride": 6, "attention": "local"},
]
WINDOW = 1536


def random_model(folder: Path, shape: dict, window: int = WINDOW, legacy_head: bool = False) -> Path:
    """A pattern model of `shape` with random weights: the per-base stem and decoder as `train` builds them by
    default, or (legacy_head) the k x classes head of models from before them."""
    torch.manual_seed(0)
    tok = KmerTokenizer(shape["k"], shape["stride"])
    config = ReformerConfig(vocab_size=tok.vocab_size, d_model=shape["d_model"], depth=shape["depth"], heads=4,
                            bucket_size=32, n_hashes=2, attention=shape["attention"], window_size=32)
    model = GenoModel(config, tok, "pattern", n_classes=2, per_base=LEGACY if legacy_head else PerBaseConfig())
    head = {"n_classes": 2, "n_evidence": 0, "class_names": ["motif", "cpg"]}
    save_checkpoint(folder, model, {"step": 0, "head": head, "train_config": {"window": window}}, {})
    return folder


def part_variants(folder: Path, example, n: int, shapes: list[dict], legacy_head: bool = False) -> list[dict]:
    import pysam

    rng = np.random.default_rng(0)
    with pysam.FastaFile(str(example.reference)) as fa:
        seq = fa.fetch("chrA").upper()
        lines = ["##fileformat=VCFv4.2"] + [f"##contig=<ID={c},length={fa.get_reference_length(c)}>"
                                            for c in fa.references]
    lines.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO")
    positions = sorted(p for p in rng.choice(len(seq), 3 * n, replace=False) if seq[p] in "ACGT")[:n]
    lines += [f"chrA\t{p + 1}\t.\t{seq[p]}\t{'ACGT'[('ACGT'.index(seq[p]) + 1) % 4]}\t.\t.\t." for p in positions]
    vcf = folder / "snvs.vcf"
    vcf.write_text("\n".join(lines) + "\n")
    rows = []
    for shape in shapes:
        model = random_model(folder / f"m-{shape['name'].replace(' ', '_').replace(':', '')}", shape,
                             legacy_head=legacy_head)
        for rc in (False, True):
            s = score_variants(ScoreConfig(model=str(model), reference=str(example.reference), vcf=str(vcf),
                                           out=str(folder / "scores"), rc_average=rc, device="cpu", force=True,
                                           progress=False))
            rows.append({"model": shape["name"], "rc_average": rc, "variants": s["records"],
                         "seconds": s["seconds"], "variants_per_s": s["variants_per_s"]})
            print(rows[-1], flush=True)
    return rows


def part_sequences(folder: Path, steps: int) -> list[dict]:
    run = folder / "promoters"
    trained = train(TrainConfig.from_dict(dict(
        task="classify", sequences=str(PROMOTERS), val_fraction=0.2, alphabet="dna", per_residue=False, window=251,
        k=6, d_model=64, depth=2, heads=4, attention="full", lr=1e-3, batch_size=32, max_steps=steps,
        val_every=steps, ckpt_every=10 ** 9, device="cpu", progress=False, out=str(run))))
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    accuracy = next(float(r["value"]) for r in rows if r["split"] == "val" and r["metric"] == "accuracy")
    s = predict_sequences(SequencesConfig(model=str(run), sequences=str(PROMOTERS), out=str(folder / "p.h5"),
                                          device="cpu", force=True, progress=False))
    return [{"model": "classify d64 x2, k6, full (251 bp)", "steps": trained["step"], "val_accuracy": accuracy,
             "sequences": s["sequences"], "seconds": s["seconds"], "sequences_per_s": s["sequences_per_s"]}]


def _changed_windows(model: Path, example, region: str) -> int:
    """Forward passes of whole windows an ISM over `region` makes (one per change and window containing it)."""
    from genoformer.apply import attribute as attr
    from genoformer.apply.model import load_model
    from genoformer.io.fasta import Reference
    from genoformer.predict.grid import grid_step

    am = load_model(str(model), "cpu")
    with Reference(example.reference) as ref:
        iv = ref.region(region)
        margin = WINDOW // 4 // am.tokenizer.stride * am.tokenizer.stride
        inputs = attr.targets(am, ref, iv, WINDOW, margin, grid_step(WINDOW, margin, am.tokenizer.stride))
    return sum(sum(1 for _ in attr.changes(t, iv)) for t in inputs)


def part_ism(folder: Path, example, bases: dict[str, int], shapes: list[dict],
             legacy_head: bool = False) -> list[dict]:
    rows = []
    for shape in shapes:
        length = bases.get(shape["attention"], 2000)
        model = random_model(folder / f"ism-{shape['name'].replace(' ', '_').replace(':', '')}", shape,
                             legacy_head=legacy_head)
        region = f"chrA:20,001-{20_000 + length}"
        started = time.perf_counter()
        s = run_attribute(AttributeConfig(model=str(model), reference=str(example.reference), region=region,
                                          out=str(folder / "ism"), methods=["ism"], logo=False, device="cpu",
                                          force=True, progress=False))
        seconds = time.perf_counter() - started
        row = {"model": shape["name"], "region_bases": length, "seconds": seconds,
               "changes_per_s": 3 * length / seconds, "seconds_2kb": seconds, "extrapolated": length != 2000,
               "bases_run": s["ism_bases_run"]}
        if row["extrapolated"]:  # whole windows each (LSH): scale by the windows a 2 kb run would pass
            per_window = seconds / (s["ism_bases_run"] / WINDOW)
            row["seconds_2kb"] = per_window * _changed_windows(model, example, "chrA:20,001-22,000")
        rows.append(row)
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="variants,sequences,ism")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", type=int, default=200, help="SNVs scored per model")
    ap.add_argument("--steps", type=int, default=300, help="training steps of the promoter classify model")
    ap.add_argument("--ism-bases", default="lsh:200,local:2000",
                    help="region length per attention kind, e.g. lsh:200,local:2000 (2 kb is extrapolated)")
    ap.add_argument("--shapes", help="comma-separated indices into SHAPES (default: all)")
    ap.add_argument("--legacy-head", action="store_true",
                    help="models without the per-base stem and decoder (as before them), for comparison")
    ap.add_argument("--json", default=str(RESULTS / "apply_bench.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    parts = args.parts.split(",")
    shapes = [SHAPES[int(i)] for i in args.shapes.split(",")] if args.shapes else SHAPES
    result = {"benchmark": "apply_bench", "machine": machine(), "command": " ".join(sys.argv), "window": WINDOW,
              "per_base": "legacy head" if args.legacy_head else "stem + decoder"}
    with tempfile.TemporaryDirectory(prefix="genoformer-apply-bench-") as tmp:
        folder = Path(tmp)
        example = simulate(folder / "example", seed=0, contigs=(("chrA", 60_000), ("chrB", 10_000)), coverage=0.1)
        if "variants" in parts:
            result["variants"] = part_variants(folder, example, args.variants, shapes, args.legacy_head)
            print(table(result["variants"], [("model", "model", ""), ("rc_average", "rc", ""),
                                             ("variants", "SNVs", "d"), ("seconds", "s", ".1f"),
                                             ("variants_per_s", "variants/s", ".1f")]))
        if "sequences" in parts:
            result["sequences"] = part_sequences(folder, args.steps)
            print(table(result["sequences"], [("model", "model", ""), ("val_accuracy", "val acc", ".3f"),
                                              ("sequences", "sequences", "d"),
                                              ("seconds", "s", ".1f"), ("sequences_per_s", "sequences/s", ".0f")]))
        if "ism" in parts:
            bases = {k: int(v) for k, v in (item.split(":") for item in args.ism_bases.split(","))}
            result["ism"] = part_ism(folder, example, bases, shapes, args.legacy_head)
            print(table(result["ism"], [("model", "model", ""), ("region_bases", "bases", "d"),
                                        ("seconds", "s", ".1f"), ("changes_per_s", "changes/s", ".1f"),
                                        ("seconds_2kb", "s per 2 kb", ".0f"), ("extrapolated", "extrap.", "")]))
    save_json(args.json, result)


if __name__ == "__main__":
    main()
