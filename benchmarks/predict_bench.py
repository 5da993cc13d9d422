"""Prediction throughput: the default model shape over real chr20 reads, and what a genome would cost.

The model is the default architecture (d_model 256, depth 6, 4 heads, LSH attention with bucket
64 and 4 hashes, k = 6, variant head fusing read evidence) with RANDOM weights: speed does not
depend on what the weights learned. It predicts chr20:10,000,001-10,100,000 of the NA12878 set
with its BAM through `genoformer.predict.runner` (windows, reads, model, HDF5 writer: the whole path),
once per window size.

Reported per window size: windows run, seconds (wall; and CPU seconds over all threads, which
show how much a shared machine held the run back), bases/s of the region, steady-state bases/s
(bases kept per second: windows x step / seconds, which is the rate over a long contig, since a
short region also pays for the context around it), HDF5 bytes per predicted base, and hours for
3.1 Gb at the steady-state rate.

    python benchmarks/predict_bench.py [--windows 65536,262144] [--device cpu] [--json out.json]
    python benchmarks/predict_bench.py --shape variant-cpu --ks 1,6 --windows 4096 --repeats 3 --batch-size 0

--shape variant-cpu is pipelines/variant-cpu.yaml's model (d_model 64, depth 2, LSH bucket 32 x 2 hashes,
stem and decoder), once per --ks k-mer size, the sizes alternated --repeats times in one run (issue 17:
k 6 against k 1 at the same window and width). --batch-size 0: predict's own default.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from genoformer.io.alignments import EVIDENCE_FEATURES
from genoformer.io.variant_classes import VARIANT_CLASSES
from genoformer.model.checkpoint import save_checkpoint
from genoformer.model.config import ReformerConfig
from genoformer.model.heads import GenoModel
from genoformer.model.per_base import PerBaseConfig
from genoformer.predict.runner import PredictConfig, predict
from genoformer.tokenize import KmerTokenizer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "variant_chr20_na12878"
FASTA, BAM = DATA / "ucsc.hg19.chr20.unittest.fasta.gz", DATA / "NA12878_S1.chr20.10_10p1mb.bam"
REGION = "chr20:10,000,001-10,100,000"
GENOME = 3.1e9


SHAPES = {"default": {}, "variant-cpu": dict(d_model=64, depth=2, heads=4, attention="lsh", bucket_size=32, n_hashes=2)}


def default_model(run_dir: Path, window: int, shape: str = "default", k: int = 6) -> Path:
    torch.manual_seed(0)
    tok = KmerTokenizer(k)
    model = GenoModel(ReformerConfig(vocab_size=tok.vocab_size, **SHAPES[shape]), tok, "variant",
                      n_classes=len(VARIANT_CLASSES), n_evidence=len(EVIDENCE_FEATURES),
                      per_base=PerBaseConfig())  # training's defaults
    head = {"n_classes": len(VARIANT_CLASSES), "n_evidence": len(EVIDENCE_FEATURES), "class_names": list(VARIANT_CLASSES)}
    save_checkpoint(run_dir, model, {"step": 0, "head": head, "train_config": {"window": window}}, {})
    return run_dir


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--windows", default="65536,262144", help="comma-separated window sizes in bases")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--batch-size", type=int, default=1, help="windows per forward pass (0: predict's default)")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="default")
    ap.add_argument("--ks", default="6", help="comma-separated k-mer sizes, one model each")
    ap.add_argument("--repeats", type=int, default=1, help="runs of every model and window, alternated")
    ap.add_argument("--region", default=REGION)
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args()
    if not FASTA.is_file():
        sys.exit(f"real data not found at {DATA}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ks = [int(k) for k in args.ks.split(",")]
        runs = {k: default_model(Path(tmp) / f"model-k{k}", 65_536, args.shape, k) for k in ks}
        for repeat, window, k in ((r, int(w), k) for r in range(args.repeats) for w in args.windows.split(",")
                                  for k in ks):
            out = Path(tmp) / f"w{window}.h5"
            started, cpu_started = time.perf_counter(), time.process_time()
            s = predict(PredictConfig(model=str(runs[k]), reference=str(FASTA), bam=str(BAM), regions=[args.region],
                                      out=str(out), window=window, batch_size=args.batch_size or None,
                                      device=args.device, progress=False, force=True))
            seconds = time.perf_counter() - started  # including model load and checksums, as a user waits
            cpu_seconds = time.process_time() - cpu_started  # all threads: shows how much a busy box held it back
            steady = s["windows"] * s["step"] / seconds
            rows.append({"k": k, "repeat": repeat, "window": window, "margin": s["margin"], "windows": s["windows"], "seconds": seconds,
                         "cpu_seconds": cpu_seconds,
                         "bases": s["bases"], "bases_per_s": s["bases"] / seconds, "steady_bases_per_s": steady,
                         "hdf5_bytes_per_base": out.stat().st_size / s["bases"],
                         "genome_hours": GENOME / steady / 3600})
    env = {"device": args.device, "torch": torch.__version__, "threads": torch.get_num_threads(),
           "python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
           "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
           "model": ("d_model 256, depth 6, heads 4, LSH (bucket 64, 4 hashes)" if args.shape == "default" else
                     "pipelines/variant-cpu.yaml's: d_model 64, depth 2, heads 4, LSH (bucket 32, 2 hashes)")
           + f", k {args.ks}, variant head + reads, stem + decoder, random weights",
           "region": args.region, "batch_size": args.batch_size or "predict's default", "shape": args.shape}
    print(f"predict: {env['model']}; {args.region} with the NA12878 BAM on {args.device} "
          f"({env['gpu'] or str(env['threads']) + ' threads'})")
    print(f"{'k':>2} {'window':>9} {'windows':>7} {'seconds':>8} {'cpu s':>7} {'bases/s':>9} {'steady b/s':>10} {'B/base':>7} "
          f"{'3.1 Gb h':>9}")
    for r in rows:
        print(f"{r['k']:>2} {r['window']:>9,} {r['windows']:>7} {r['seconds']:>8.1f} {r['cpu_seconds']:>7.1f} "
              f"{r['bases_per_s']:>9,.0f} "
              f"{r['steady_bases_per_s']:>10,.0f} {r['hdf5_bytes_per_base']:>7.2f} {r['genome_hours']:>9,.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
