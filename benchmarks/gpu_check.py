#!/usr/bin/env python
"""GPU check: the CUDA path tested and measured by one command, about 5 minutes on one H100 (docs/gpu.md).

    benchmarks/gpu_check.sh                                  # on the GPU machine (installs from wheels/ first)
    python benchmarks/gpu_check.py --device cpu --dry-run    # every part at a tiny size on a CPU, in seconds

Parts, in this order.  The JSON (--json; benchmarks/results/gpu_check.json) is rewritten after each part, so a
run cut short keeps what it measured; a part that fails is recorded, the next one runs, and the exit status is 1.
1. tests: the tests marked gpu (pytest -m gpu), in a subprocess.
2. train: the GPU recipe (pipelines/variant.yaml: 1 Mb windows at k = 1, 6 LSH layers, stem, decoder, reads) on
   a window of a simulated genome: one training step (forward, backward, gradient clipping, AdamW) timed over
   --steps after --warmup, the inference forward of the same window, peak torch.cuda.max_memory_allocated over
   the timed steps, and model FLOPs utilisation (MFU): model/flops.py's analytic count of a training step over
   the GPU's dense bf16 peak (PEAK_BF16_TFLOPS, or --peak-tflops).  Data loading is not in the step.
3. attention: the recipe's encoder at --attention-depth layers with LSH, local and full attention, 65,536 and
   262,144 tokens: a training step (forward and backward of a sum of squares), its peak memory and MFU.
4. predict: genoformer.predict (windows, reads, model, HDF5 writer) with random weights over the simulated contig
   (--contig-mb, reads at --coverage): bases/s along the contig, extrapolated to 3.1 Gb; and the model alone,
   from part 2's forward.

On CUDA the forward passes run under bf16 autocast (genoformer.devices), on the CPU in float32.  The simulated
genome (genoformer.simulate) is made once, in a temporary folder, before parts 2 and 4.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this source tree's genoformer, installed or not

from genoformer.devices import autocast, resolve_device  # noqa: E402
from genoformer.errors import GenoformerError  # noqa: E402
from genoformer.model.flops import TRAIN_STEP_FACTOR, encoder_flops, train_step_flops  # noqa: E402

RECIPE = ROOT / "pipelines" / "variant.yaml"
GENOME = 3.1e9
CONTIG = "sim1"
ATTENTION_KINDS = ("lsh", "local", "full")
PARTS = ("tests", "train", "attention", "predict")
# dense bf16 tensor-core peak per GPU (vendor datasheets), matched in order against torch.cuda.get_device_name()
PEAK_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4), ("A100", 312.0))


@dataclasses.dataclass(frozen=True)
class Sizes:
    contig: int  # bases of the simulated contig
    coverage: float  # of its simulated reads
    window: int | None  # None: the recipe's
    model: dict  # model options over the recipe's
    lengths: tuple[int, ...]  # tokens, attention part
    attention_depth: int
    warmup: int
    steps: int  # timed training steps (the attention part times max(1, steps - 2))
    tests: tuple[str, ...]  # what pytest -m gpu collects


FULL = Sizes(contig=20_000_000, coverage=2.0, window=None, model={}, lengths=(65_536, 262_144), attention_depth=2,
             warmup=2, steps=5, tests=("tests",))
DRY_RUN = Sizes(contig=12_000, coverage=2.0, window=1_024, lengths=(256, 512), attention_depth=2, warmup=1, steps=2,
                model={"d_model": 32, "depth": 2, "heads": 2, "bucket_size": 16, "n_hashes": 2, "stem_width": 8,
                       "decoder_width": 8},
                tests=("tests/model/test_cuda.py",))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, warmup: int, steps: int) -> tuple[list[float], int | None]:
    """Seconds of each of `steps` calls of fn after `warmup` untimed ones, and the peak bytes allocated on a CUDA
    device over the timed calls (None on the CPU)."""
    for _ in range(warmup):
        fn()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds = []
    for _ in range(steps):
        started = time.perf_counter()
        fn()
        sync(device)
        seconds.append(time.perf_counter() - started)
    return seconds, torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None


def free_cached(device: torch.device) -> None:
    """Hand the CUDA caching allocator's free blocks back, so the next measurement starts from what is live."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def peak_flops(device: torch.device, tflops: float | None) -> float | None:
    if tflops:
        return tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak * 1e12 for key, peak in PEAK_BF16_TFLOPS if key in name), None)


def measured(seconds: list[float], peak_bytes: int | None, flops: int, peak: float | None) -> dict:
    step = statistics.median(seconds)
    return {"step_s": step, "steps_s": seconds, "peak_gib": None if peak_bytes is None else peak_bytes / 2 ** 30,
            "flops": flops, "tflops_per_s": flops / step / 1e12, "mfu": None if peak is None else flops / step / peak}


# ---------------------------------------------------------------------------------------------- the parts

def run_tests(paths: tuple[str, ...]) -> dict:
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *paths]
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", summary)}
    if proc.returncode:
        sys.stderr.write(proc.stdout[-6000:] + proc.stderr[-2000:])
        raise RuntimeError(f"pytest -m gpu exited {proc.returncode}: {summary}")
    return {"command": " ".join(command[1:]), "seconds": time.perf_counter() - started, "summary": summary,
            "counts": counts}


def simulated_data(args, sizes: Sizes, folder: Path):
    """A simulated genome of one contig with reads and truth, and the recipe's TrainData over it."""
    from genoformer.simulate.genome import simulate
    from genoformer.train.config import TrainConfig
    from genoformer.train.data import prepare
    from genoformer.train.recipes import read_recipe, with_flags

    started = time.perf_counter()
    sim = simulate(folder / "genome", seed=0, contigs=[(CONTIG, sizes.contig)], coverage=sizes.coverage)
    flags = {"reference": str(sim.reference), "bam": str(sim.reads), "truth_vcf": str(sim.truth_vcf),
             "confident_bed": str(sim.confident_bed), "train_regions": [CONTIG], "val_regions": None,
             "device": args.device, "progress": False, "out": str(folder / "run")} | sizes.model
    if sizes.window:
        flags["window"] = sizes.window
    data = prepare(TrainConfig.from_dict(with_flags(read_recipe(str(RECIPE)), flags)))
    return sim, data, time.perf_counter() - started


def run_train(data, device: torch.device, sizes: Sizes, peak: float | None) -> dict:
    from genoformer.model.heads import batch_inputs
    from genoformer.train.data import collate_fn
    from genoformer.train.losses import forward_loss
    from genoformer.train.loop import build_model
    from genoformer.train.schedule import optimizer_and_schedule

    config = data.config
    torch.manual_seed(config.seed)
    model = build_model(data, None).to(device).train()
    optimizer, _ = optimizer_and_schedule(model, config)
    batch = collate_fn(data.train)([data.train[next(iter(data.sampler))]])
    weights = None if data.class_weights is None else torch.tensor(data.class_weights, device=device)

    def step():
        with autocast(device):
            loss, _ = forward_loss(model, config.task, batch, device, class_weights=weights)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    window, n_tokens = config.window, int(batch["tokens"].shape[1])
    result = {"window": window, "k": config.k, "tokens": n_tokens, "model": dataclasses.asdict(config.model),
              "parameters": sum(p.numel() for p in model.parameters())}
    result |= measured(*timed(step, device, sizes.warmup, sizes.steps), train_step_flops(model, window), peak)
    model.eval()
    inputs = batch_inputs(batch, device)

    def forward():
        with torch.inference_mode(), autocast(device):
            model(**inputs)

    forward_s, forward_peak = timed(forward, device, 1, sizes.steps)
    result |= {"forward_s": statistics.median(forward_s),
               "forward_peak_gib": None if forward_peak is None else forward_peak / 2 ** 30}
    return result


def run_attention(data, device: torch.device, sizes: Sizes, peak: float | None) -> list[dict]:
    from genoformer.model.reformer import Reformer

    rows = []
    for n_tokens in sizes.lengths:
        for kind in ATTENTION_KINDS:
            config = dataclasses.replace(data.config.model.reformer_config(data.tokenizer.vocab_size),
                                         attention=kind, depth=sizes.attention_depth)
            row = {"attention": kind, "tokens": n_tokens, "depth": config.depth}
            torch.manual_seed(0)
            model = Reformer(config).to(device).train()
            tokens = torch.randint(1, config.vocab_size, (1, n_tokens), device=device)

            def step():
                model.zero_grad(set_to_none=True)
                with autocast(device):
                    hidden = model(tokens)
                hidden.float().square().mean().backward()

            flops = TRAIN_STEP_FACTOR * sum(encoder_flops(config, n_tokens).values())
            try:
                row |= measured(*timed(step, device, 1, max(1, sizes.steps - 2)), flops, peak)
            except torch.cuda.OutOfMemoryError:
                row["error"] = "CUDA out of memory"
            rows.append(row)
            del model, tokens, step  # before the next configuration allocates
            free_cached(device)
    return rows


def run_predict(sim, data, device: torch.device, folder: Path, coverage: float, forward_s: float | None) -> dict:
    from genoformer.model.checkpoint import save_checkpoint
    from genoformer.predict.runner import PredictConfig, predict
    from genoformer.train.loop import build_model

    torch.manual_seed(0)
    window = data.config.window
    save_checkpoint(folder / "model", build_model(data, None), {"step": 0, "head": data.head,
                                                                "train_config": {"window": window}}, {})
    s = predict(PredictConfig(model=str(folder / "model"), reference=str(sim.reference), bam=str(sim.reads),
                              out=str(folder / "predictions.h5"), window=window, device=device.type, progress=False))
    steady = s["windows"] * s["step"] / s["seconds"]  # bases kept per second along the contig
    result = {"contig_bases": s["bases"], "coverage": coverage, "window": window, "margin": s["margin"],
              "windows": s["windows"], "batch_size": s["batch_size"], "seconds": s["seconds"],
              "bases_per_s": steady, "genome_hours": GENOME / steady / 3600}
    if forward_s:  # the model alone: one forward per window step
        result |= {"model_bases_per_s": s["step"] / forward_s,
                   "model_genome_hours": GENOME * forward_s / s["step"] / 3600}
    return result


# ---------------------------------------------------------------------------------------------- report

def environment(device: torch.device) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except OSError:
        commit = None
    return {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "cpu_threads": torch.get_num_threads(), "commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def number(value, spec: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def table(results: dict) -> str:
    rows = [("part", "case", "time", "peak GiB", "rate", "MFU")]
    if "tests" in results:
        t = results["tests"]
        rows.append(("tests", "pytest -m gpu", number(t.get("seconds"), ".1f", " s"), "-",
                     t.get("summary") or t.get("error", "-"), "-"))
    if "train" in results:
        t = results["train"]
        if "error" in t:
            rows.append(("train", "recipe window", "-", "-", t["error"], "-"))
        else:
            case = f"variant {t['window']:,} b, k={t['k']}, {t['tokens']:,} tok"
            rows.append(("train", case, number(t["step_s"], ".3f", " s/step"), number(t["peak_gib"], ".2f"),
                         f"{t['window'] / t['step_s']:,.0f} b/s", number(t["mfu"], ".1%")))
            rows.append(("train", "  same window, inference forward", number(t["forward_s"], ".3f", " s"),
                         number(t["forward_peak_gib"], ".2f"), f"{t['window'] / t['forward_s']:,.0f} b/s", "-"))
    for r in results.get("attention") or []:
        case = f"{r['attention']}, {r['tokens']:,} tokens, {r['depth']} layers"
        if "error" in r:
            rows.append(("attention", case, "-", "-", r["error"], "-"))
        else:
            rows.append(("attention", case, number(r["step_s"], ".3f", " s/step"), number(r["peak_gib"], ".2f"),
                         f"{r['tokens'] / r['step_s']:,.0f} tok/s", number(r["mfu"], ".1%")))
    if "predict" in results:
        p = results["predict"]
        if "error" in p:
            rows.append(("predict", "simulated contig", "-", "-", p["error"], "-"))
        else:
            rows.append(("predict", f"{p['contig_bases'] / 1e6:,.2f} Mb, reads {p['coverage']}x",
                         number(p["seconds"], ".1f", " s"), "-",
                         f"{p['bases_per_s']:,.0f} b/s; 3.1 Gb {p['genome_hours']:,.2f} h", "-"))
            if "model_bases_per_s" in p:
                rows.append(("predict", "  model alone (train's forward)", "-", "-",
                             f"{p['model_bases_per_s']:,.0f} b/s; 3.1 Gb {p['model_genome_hours']:,.2f} h", "-"))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(str(c).ljust(w) if i < 2 or j == 0 else str(c).rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths))) for j, r in enumerate(rows)]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--dry-run", action="store_true", help="every part at a tiny size (seconds on a CPU)")
    ap.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    ap.add_argument("--steps", type=int, help="timed training steps (default 5; dry run 2)")
    ap.add_argument("--contig-mb", type=float, help="simulated contig, Mb (default 20)")
    ap.add_argument("--coverage", type=float, help="of the simulated reads (default 2)")
    ap.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, for MFU (default: by its name)")
    ap.add_argument("--json", help="default benchmarks/results/gpu_check.json (dry run: gpu_check_dry_run.json)")
    args = ap.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not parts or set(parts) - set(PARTS):
        ap.error(f"--parts: choose from {', '.join(PARTS)}")
    sizes = DRY_RUN if args.dry_run else FULL
    changes = {"steps": args.steps, "coverage": args.coverage,
               "contig": None if args.contig_mb is None else round(args.contig_mb * 1e6)}
    sizes = dataclasses.replace(sizes, **{k: v for k, v in changes.items() if v is not None})
    out = Path(args.json or ROOT / "benchmarks" / "results" / f"gpu_check{'_dry_run' if args.dry_run else ''}.json")
    try:
        device = resolve_device(args.device)
    except GenoformerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    peak = peak_flops(device, args.peak_tflops)
    results: dict = {"env": environment(device) | {"peak_bf16_tflops": None if peak is None else peak / 1e12},
                     "sizes": dataclasses.asdict(sizes) | {"dry_run": args.dry_run}}
    failed = []

    def record(name: str, run) -> None:
        started = time.perf_counter()
        try:
            results[name] = run()
        except Exception as e:  # recorded; the next part still runs
            traceback.print_exc()
            results[name] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:200]}
            failed.append(name)
        free_cached(device)
        print(f"[gpu_check] {name}: {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        folder = Path(tmp)
        if "tests" in parts:
            record("tests", lambda: run_tests(sizes.tests))
        made: dict = {}

        def make_data() -> dict:
            made["sim"], made["data"], seconds = simulated_data(args, sizes, folder)
            return {"contig_bases": sizes.contig, "coverage": sizes.coverage, "seconds": seconds}

        if {"train", "attention", "predict"} & set(parts):
            record("data", make_data)
        if made:
            sim, data = made["sim"], made["data"]
            if "train" in parts:
                record("train", lambda: run_train(data, device, sizes, peak))
            if "attention" in parts:
                record("attention", lambda: run_attention(data, device, sizes, peak))
            if "predict" in parts:
                forward_s = (results.get("train") or {}).get("forward_s")
                record("predict", lambda: run_predict(sim, data, device, folder, sizes.coverage, forward_s))
    print(table(results))
    print(f"JSON: {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
