"""Masked-modelling quality in bits per base: genoformer's mlm model against order-k Markov models.

Real sequence of the chr20 FASTA (../shared/data/variant_chr20_na12878), split into
- test: chr20:10,600,001-10,700,000 (scored; nothing trains or is chosen on it);
- validation: chr20:10,500,001-10,600,000 (the Markov smoothing is chosen on it);
- training: the rest of the real sequence (TRAIN_REGIONS, 1.125 Mb).
`--score-on validation` scores both models on the validation region instead (the Markov smoothing is
still chosen there): the split to choose genoformer's settings on, leaving the test region unseen.

genoformer: `genoformer.train` with task mlm on the training regions, validating once, after the
last step, on the windows tiling the test region (it chooses nothing, so this is the score). The
figure is the `bits_per_base` the training code reports when it does (per-base masked modelling:
cross-entropy of the masked bases, about mask_fraction of them, in bits). A token-level model
reports only its token loss; then the figure is computed here from the checkpoint: the test region
is cut into windows of the training window, each window's tokens are masked in PASSES passes (pass p
masks the spans of `mask_span` tokens whose span number is p modulo PASSES: ~1/PASSES of the
tokens, in spans as in training, every token once), and each masked token all of whose k bases
are A/C/G/T costs -log2 P(its k-mer), the softmax over the 4^k A/C/G/T k-mers only, divided by k
bases (tokens must not overlap: stride = k). Either way the model sees both sides of a masked
span; a Markov model sees only the bases before, so the comparison favours genoformer.

Markov baseline (markov.py): orders 0..5 fitted on the training regions' bases on both strands,
smoothing (add-one, or interpolated with a prior weight beta) chosen per order on the validation
region, scored on the test region's bases (each with 5 A/C/G/T bases before it, so every order
scores the same bases). Headline: order 5; the summary also gives order 0 (base composition alone)
and the table every order.

    python benchmarks/quality/mlm_quality.py [--budget 6m|300] [--seeds 0,1,2] [--k 1] [--window 1024]
        [--baseline-only] [--json PATH]
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import functools
import itertools
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
from markov import ORDERS, MarkovCounts, bits_per_base, choose, codes
from quality_common import (
    FASTA,
    Measurement,
    TrainConfig,
    add_common_args,
    add_model_args,
    check_data,
    load_checkpoint,
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

from genoformer.coords import parse_region
from genoformer.io.fasta import Reference
from genoformer.tokenize import MASK_ID, soft_mask

TEST_REGION = "chr20:10,600,001-10,700,000"
VAL_REGION = "chr20:10,500,001-10,600,000"
TRAIN_REGIONS = ["chr20:9,995,001-10,500,000", "chr20:10,700,001-11,095,000", "chr20:59,776,001-60,001,000"]
HEADLINE_ORDER = 5
PASSES = 7


def region_codes(regions: list[str], context: int = 0) -> list[np.ndarray]:
    """A/C/G/T codes of each region, with `context` bases before it (so its first bases have a context)."""
    ref = Reference(FASTA)
    out = []
    for region in regions:
        iv = parse_region(region, ref.contigs)
        out.append(codes(ref.fetch(iv.contig, max(iv.start - context, 0), iv.end).tobytes()))
    return out


@functools.lru_cache(maxsize=None)  # deterministic: the same for every seed and option
def markov_baseline() -> dict:
    started = time.perf_counter()
    counts = MarkovCounts.fit(region_codes(TRAIN_REGIONS), max(ORDERS), both_strands=True)
    skip = max(ORDERS)
    val, test = region_codes([VAL_REGION], skip), region_codes([TEST_REGION], skip)
    orders = choose(counts, val, ORDERS)
    for row in orders:
        row["test_bits"], row["test_bases"] = bits_per_base(counts.probabilities(row["order"], row["smoothing"]),
                                                            test, skip)
    return {"orders": orders, "train_bases": int(counts.counts[0].sum()), "seconds": time.perf_counter() - started}


def kmer_ids(tokenizer) -> tuple[torch.Tensor, dict[int, int]]:
    """(token ids of the 4^k A/C/G/T k-mers, {token id: its row in that list})."""
    ids = [int(tokenizer.encode("".join(kmer))[0]) for kmer in itertools.product("ACGT", repeat=tokenizer.k)]
    return torch.tensor(ids), {t: i for i, t in enumerate(ids)}


def masked_bits_per_base(model, ref: Reference, region: str, window: int, span: int, seed: int,
                         passes: int = PASSES) -> tuple[float, int]:
    """(bits per base, bases scored) of an mlm model over `region` of `ref` (see the module docstring)."""
    model.eval()
    torch.manual_seed(seed)  # LSH rotations
    tok = model.tokenizer
    if tok.stride != tok.k:
        raise SystemExit(f"bits per base needs non-overlapping tokens; this model has k {tok.k}, stride {tok.stride}")
    ids, row_of = kmer_ids(tok)
    iv = parse_region(region, ref.contigs)
    total, bases = 0.0, 0
    with torch.no_grad():
        for start in range(iv.start, iv.end, window):
            seq = ref.fetch(iv.contig, start, min(start + window, iv.end)).tobytes()
            tokens = torch.from_numpy(tok.encode(seq).astype(np.int64))[None]
            # a stem reads the bases too: those of the masked k-mers are hidden from it (as N), as in training
            letters = torch.from_numpy(tok.codes(seq).astype(np.int64))[None]
            soft = torch.from_numpy(soft_mask(seq))[None]
            rows = torch.tensor([row_of.get(int(t), -1) for t in tokens[0]])
            span_number = torch.arange(tokens.shape[1]) // span
            for p in range(passes):
                masked = (span_number % passes == p) & (rows >= 0)
                if not masked.any():
                    continue
                hidden = masked.repeat_interleave(tok.k)[:letters.shape[1]]  # stride k: token t spells bases t*k..
                logits = model(tokens.masked_fill(masked[None], MASK_ID), torch.ones_like(tokens, dtype=torch.bool),
                               n_bases=letters.shape[1], bases=letters.masked_fill(hidden[None], tok.pad_code),
                               soft_mask=soft, valid=torch.ones_like(letters, dtype=torch.bool))
                logp = torch.log_softmax(logits[0][:, ids].float(), -1)
                total -= float(logp[masked, rows[masked]].sum()) / math.log(2)
                bases += int(masked.sum()) * tok.k
    return total / bases, bases


def scored_region(args) -> str:
    return VAL_REGION if args.score_on == "validation" else TEST_REGION


def mlm_config(args, out: Path, seed: int, options: dict) -> TrainConfig:
    config = TrainConfig(task="mlm", reference=str(FASTA), train_regions=TRAIN_REGIONS,
                         val_regions=[scored_region(args)],
                         val_windows=math.ceil(100_000 / args.window), window=args.window, k=args.k,
                         model=model_options(args), lr=args.lr, batch_size=args.batch_size,
                         max_steps=1, ckpt_every=10 ** 9, val_every=10 ** 9, seed=seed, device="cpu", out=str(out),
                         progress=False)
    return with_options(config, options)


def reported(metrics_csv: Path) -> dict[str, float]:
    """The training code's validation metrics (the one validation, after the last step)."""
    return {r["metric"]: float(r["value"]) for r in csv.DictReader(metrics_csv.open()) if r["split"] == "val"}


def measure(args, folder: Path, seed: int, options: dict, steps: int) -> Measurement:
    markov = markov_baseline()
    column = "val_bits" if args.score_on == "validation" else "test_bits"
    baselines = {f"Markov order {k}": markov["orders"][k][column] for k in (HEADLINE_ORDER, 0)}
    info, bits = None, None
    if not args.baseline_only:
        config = mlm_config(args, folder / f"mlm-seed{seed}-{time.monotonic_ns()}", seed, options)
        config.max_steps = steps
        summary = train(config)
        val = reported(Path(config.out) / "metrics.csv")
        info = {"steps": summary["step"], "train_seconds": summary["seconds"], "final_loss": summary["final_loss"],
                "validation": val}
        if "bits_per_base" in val:
            bits, info["source"] = val["bits_per_base"], "the training code's bits_per_base"
        else:
            bits, info["test_bases_scored"] = masked_bits_per_base(
                load_checkpoint(config.out)[0], Reference(FASTA), scored_region(args), config.window, config.mask_span,
                seed)
            info["source"] = "computed here from the checkpoint: a token-level model"
    return Measurement(f"bits per base, {args.score_on} region", bits, baselines, higher_is_better=False,
                       detail={"genoformer": info, "markov": markov})


def probe_config(args, folder: Path, options: dict) -> TrainConfig:
    return mlm_config(args, folder / "probe", 0, options)


def add_args(ap: argparse.ArgumentParser) -> None:
    """This benchmark's options (also read by ablation.py)."""
    ap.add_argument("--window", type=int, default=1024, help="training and scoring window in bases")
    ap.add_argument("--k", type=int, default=1, help="k-mer size (stride k: bits per base needs non-overlapping tokens)")
    add_model_args(ap, d_model=64, batch_size=8)
    ap.add_argument("--score-on", choices=("test", "validation"), default="test",
                    help="region both models are scored on (validation: to choose settings, the test region unseen)")


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap, "mlm_quality", "6m")
    add_args(ap)
    return ap


def main() -> None:
    ap = parser()
    args = ap.parse_args()
    check_data(FASTA)
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
    markov = runs[0].detail["markov"]
    print(f"train {', '.join(TRAIN_REGIONS)} ({markov['train_bases']:,} bases, both strands for Markov); "
          f"validation {VAL_REGION}; test {TEST_REGION}; scored on the {args.score_on} region; budget {args.budget}")
    print(table([{"model": f"Markov order {r['order']}", "smoothing": r["smoothing"], "val": r["val_bits"],
                  "test": r["test_bits"]} for r in markov["orders"]],
                [("model", "model", ""), ("smoothing", "smoothing (chosen on validation)", ""),
                 ("val", "validation bits/base", ".4f"), ("test", "test bits/base", ".4f")]))
    for seed, run in zip(args.seeds, runs):
        if run.genoformer is not None:
            g = run.detail["genoformer"]
            print(f"seed {seed}: genoformer mlm ({args.attention}, k {args.k}, {g['steps']} steps): {args.score_on} "
                  f"{run.genoformer:.4f} bits/base ({g['source']})")
    summary = print_summary(runs, args.seeds)
    save_json(args.json, {"benchmark": "mlm_quality", "budget": str(args.budget), "machine": machine(),
                          "regions": {"train": TRAIN_REGIONS, "validation": VAL_REGION, "test": TEST_REGION},
                          "model": {k: getattr(args, k) for k in ("window", "k", "d_model", "depth", "heads",
                                                                  "bucket_size", "n_hashes", "attention", "lr",
                                                                  "batch_size")},
                          "score_on": args.score_on, "passes": PASSES, "seeds": args.seeds, "steps": steps,
                          "calibrated_s_per_step": per_step,
                          "baseline_only": args.baseline_only, "command": " ".join(sys.argv), "summary": summary,
                          "runs": [dataclasses.asdict(r) for r in runs]})


if __name__ == "__main__":
    main()
