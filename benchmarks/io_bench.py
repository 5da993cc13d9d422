#!/usr/bin/env python
"""Input-pipeline benchmarks on one CPU core: k-mer tokenisation and per-base read evidence.

- Tokenisation, Mbases/s: 100 Mbases of seeded random ACGT, tokenised in 1 Mb windows (as the
  dataset does), and the 1.1 Mb of real sequence in chr20:9,995,001-11,095,000 in one call.
  Goal: >= 100 Mbases/s for k=6, stride 6.
- Read evidence over chr20:10,000,001-10,100,000 of the real BAM: genoformer's Alignments.evidence
  (every io.evidence column) next to pysam's count_coverage (A/C/G/T only) on the same region in the same run,
  repetitions interleaved, medians compared. Goal: within 2x of count_coverage.

    python benchmarks/io_bench.py                       # prints a markdown table
    python benchmarks/io_bench.py --quick --json io.json
"""
from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"  # before numpy loads its BLAS: one core, as the goals are stated

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from genoformer.tokenize import KmerTokenizer  # noqa: E402

CHR20 = "variant_chr20_na12878"
REAL_REGION = ("chr20", 9_995_000, 11_095_000)
BAM_REGION = ("chr20", 10_000_000, 10_100_000)
WINDOW = 1_048_320  # ~1 Mb, a multiple of every k and stride benchmarked, so windows need no padding
TOKENIZERS = [(1, 1), (3, 3), (6, 6), (8, 8), (6, 1)]
REAL_CALLS = 10  # calls per timing of the 1.1 Mb real region


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def tokenisation(data: Path, mbases: int, repeats: int) -> list[dict]:
    rng = np.random.default_rng(0)
    random_seq = np.frombuffer(b"ACGT", dtype=np.uint8)[rng.integers(0, 4, mbases * 1_000_000, dtype=np.uint8)]
    windows = [random_seq[i:i + WINDOW] for i in range(0, random_seq.size, WINDOW)]
    from genoformer.io.fasta import Reference

    real = Reference(data / CHR20 / "ucsc.hg19.chr20.unittest.fasta.gz").fetch(*REAL_REGION)
    tokenizers = {ks: KmerTokenizer(*ks) for ks in TOKENIZERS}
    times = {(ks, name): [] for ks in TOKENIZERS for name in ("random", "real")}
    for _ in range(repeats):  # interleaved, so machine noise hits every configuration alike
        for ks, tok in tokenizers.items():
            times[ks, "random"].append(timed(lambda: [tok.encode(w) for w in windows]))
            times[ks, "real"].append(timed(lambda: [tok.encode(real) for _ in range(REAL_CALLS)]) / REAL_CALLS)
    rows = []
    for (ks, name), ts in times.items():
        n = random_seq.size if name == "random" else real.size
        what = f"{mbases} Mb random ACGT, 1 Mb windows" if name == "random" else "chr20 real 1.1 Mb, one call"
        rate = n / statistics.median(ts) / 1e6
        goal = ks == (6, 6)
        rows.append({"part": "tokenise", "case": f"k={ks[0]} stride={ks[1]}", "input": what,
                     "median_s": statistics.median(ts), "mbases_per_s": rate,
                     "goal": ">= 100 Mbases/s" if goal else "", "met": (rate >= 100) if goal else None})
    return rows


def evidence(data: Path, repeats: int) -> list[dict]:
    import pysam

    from genoformer.io.alignments import EVIDENCE_FEATURES, Alignments
    from genoformer.io.fasta import Reference

    bam_path = data / CHR20 / "NA12878_S1.chr20.10_10p1mb.bam"
    # with the reference, as training and predict read it (the ref/alt columns compare against it)
    ours = Alignments(bam_path, Reference(data / CHR20 / "ucsc.hg19.chr20.unittest.fasta.gz"))
    theirs = pysam.AlignmentFile(str(bam_path))
    ours.evidence(*BAM_REGION)  # open handles and warm the page cache before timing
    theirs.count_coverage(*BAM_REGION, quality_threshold=13, read_callback="all")
    t_ours, t_theirs = [], []
    for _ in range(repeats):
        t_ours.append(timed(lambda: ours.evidence(*BAM_REGION)))
        t_theirs.append(timed(lambda: theirs.count_coverage(*BAM_REGION, quality_threshold=13,
                                                            read_callback="all")))
    n = BAM_REGION[2] - BAM_REGION[1]
    ratio = statistics.median(t_ours) / statistics.median(t_theirs)
    region = f"{BAM_REGION[0]}:{BAM_REGION[1] + 1:,}-{BAM_REGION[2]:,}"
    return [
        {"part": "evidence", "case": f"genoformer Alignments.evidence ({len(EVIDENCE_FEATURES)} features)",
         "input": region,
         "median_s": statistics.median(t_ours), "mbases_per_s": n / statistics.median(t_ours) / 1e6,
         "goal": "<= 2x count_coverage", "met": ratio <= 2, "ratio_to_pysam": ratio},
        {"part": "evidence", "case": "pysam count_coverage (A/C/G/T)", "input": region,
         "median_s": statistics.median(t_theirs), "mbases_per_s": n / statistics.median(t_theirs) / 1e6,
         "goal": "", "met": None},
    ]


def table(rows: list[dict]) -> str:
    lines = ["| part | case | input | median s | Mbases/s | goal | met |", "|---|---|---|---:|---:|---|---|"]
    for r in rows:
        met = "" if r["met"] is None else ("yes" if r["met"] else "NO")
        goal = r["goal"] + (f" (ratio {r['ratio_to_pysam']:.2f}x)" if "ratio_to_pysam" in r else "")
        lines.append(f"| {r['part']} | {r['case']} | {r['input']} | {r['median_s']:.4f} | "
                     f"{r['mbases_per_s']:.1f} | {goal} | {met} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                        help="the shared real-data folder (default: ../shared/data beside the checkout)")
    parser.add_argument("--mbases", type=int, default=100, help="random sequence to tokenise, Mbases")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions; medians reported")
    parser.add_argument("--quick", action="store_true", help="10 Mbases, 3 repeats: a smoke run")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the rows and environment as JSON")
    args = parser.parse_args()
    if not (args.data / CHR20).is_dir():
        sys.exit(f"real data not found at {args.data / CHR20}; pass --data")
    if args.quick:
        args.mbases, args.repeats = 10, 3
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    rows = tokenisation(args.data, args.mbases, args.repeats) + evidence(args.data, args.repeats)
    print(table(rows))
    if args.json:
        import pysam

        env = {"python": platform.python_version(), "numpy": np.__version__, "pysam": pysam.__version__,
               "machine": platform.machine(), "processor": platform.processor(), "cores_used": 1,
               "mbases": args.mbases, "repeats": args.repeats}
        args.json.write_text(json.dumps({"environment": env, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
