#!/usr/bin/env python
"""Reformer benchmarks: peers, length sweep, depth sweep and a million-base window.

Every measurement runs in a FRESH subprocess, so its peak RSS (ru_maxrss of that process)
belongs to that configuration alone, and configurations are interleaved across repeats so
that machine noise hits them alike.  Peers are HF transformers' ReformerModel and lucidrains'
reformer_pytorch (pip install reformer-pytorch transformers psutil), randomly initialised.

    python benchmarks/reformer_bench.py --quick                  # smoke run, seconds per part
    python benchmarks/reformer_bench.py --part peers --json peers.json
    python benchmarks/reformer_bench.py --part million --device cuda --bf16
    python benchmarks/reformer_bench.py --part peers --tokens 65536 --baseline-root ../old-checkout

--baseline-root adds "genoformer@base" rows: the same measurements of another checkout of genoformer
(e.g. `git worktree add ../old-checkout REV`), interleaved in the same run, so a refactor is judged by
ratios measured together rather than against figures from another day.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DNA_VOCAB = 4200  # 4**6 k-mers + specials + k-mers containing N, about
MILLION_TOKENS = math.ceil(1_000_000 / 6)  # a 1 Mb window as 6-mers


# ---------------------------------------------------------------- child: one measurement

def build(spec: dict):
    """The model for spec and a function tokens -> hidden states."""
    import torch

    d, heads, depth, T, V = spec["d_model"], spec["heads"], spec["depth"], spec["tokens"], spec["vocab"]
    bucket, n_hashes = spec["bucket"], spec["n_hashes"]
    if spec["impl"].startswith("genoformer"):
        sys.path.insert(0, spec.get("root") or str(ROOT))
        from genoformer.model import Reformer, ReformerConfig

        # local attention sees 2 * window_size keys per query, LSH 2 * bucket_size per round: the same
        # keys per query (the like-for-like comparison) needs window_size = n_hashes * bucket_size
        config = ReformerConfig(vocab_size=V, d_model=d, depth=depth, heads=heads, bucket_size=bucket,
                                n_hashes=n_hashes, attention=spec["attention"], window_size=n_hashes * bucket,
                                reversible=spec["reversible"], ff_chunks=spec["ff_chunks"])
        model = Reformer(config)
        return model, lambda tokens: model(tokens)
    if spec["impl"] == "hf":
        from transformers import ReformerConfig as HFConfig, ReformerModel

        rows = 2 ** math.ceil(math.log2(T) / 2)  # axial positions must multiply to T in training
        config = HFConfig(attention_head_size=d // heads, attn_layers=["lsh"] * depth, hidden_size=d,
                          num_attention_heads=heads, lsh_attn_chunk_length=bucket, num_hashes=n_hashes,
                          feed_forward_size=4 * d, hidden_act="gelu", vocab_size=V, max_position_embeddings=T,
                          axial_pos_shape=(rows, T // rows), axial_pos_embds_dim=(d // 4, d - d // 4),
                          hidden_dropout_prob=0.0, lsh_attention_probs_dropout_prob=0.0,
                          local_attention_probs_dropout_prob=0.0, is_decoder=False)
        model = ReformerModel(config)
        return model, lambda tokens: model(input_ids=tokens).last_hidden_state
    if spec["impl"] == "lucid":
        from reformer_pytorch import ReformerLM

        model = ReformerLM(num_tokens=V, dim=d, depth=depth, max_seq_len=T, heads=heads, dim_head=d // heads,
                           bucket_size=bucket, n_hashes=n_hashes, return_embeddings=True)
        return model, lambda tokens: model(tokens)
    if spec["impl"] == "sdpa":
        model = QuadraticBaseline(V, d, heads, depth)
        return model, lambda tokens: model(tokens)
    raise ValueError(f"unknown impl {spec['impl']}")


def QuadraticBaseline(vocab: int, d: int, heads: int, depth: int):
    """Plain pre-norm transformer calling scaled_dot_product_attention directly: the O(T^2) reference."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.out = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d)
            self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
            x = x + self.out(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, T, d))
            return x + self.ff(self.norm2(x))

    return nn.Sequential(nn.Embedding(vocab, d), *[Layer() for _ in range(depth)], nn.LayerNorm(d))


def measure(spec: dict) -> dict:
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    if spec["mmap_threshold"]:  # the same allocator setting for every implementation (genoformer/allocator.py)
        sys.path.insert(0, spec.get("root") or str(ROOT))
        from genoformer.allocator import mmap_large_tensors

        if not mmap_large_tensors(spec["mmap_threshold"]):
            raise SystemExit("could not set glibc's mmap threshold (not glibc?): pass --mmap-threshold 0")
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    model, forward = build(spec)
    model.to(device).train(spec["step"] != "infer")
    tokens = torch.randint(0, spec["vocab"], (1, spec["tokens"]), device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4) if spec["step"] == "adamw" else None
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec["bf16"]):
            if spec["step"] == "infer":
                with torch.inference_mode():
                    return forward(tokens).float().sum().item()
            out = forward(tokens)
        out.float().square().mean().backward()
        if optimizer is not None:
            optimizer.step()
        model.zero_grad(set_to_none=True)
        return None

    setup_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    for _ in range(spec["warmup"]):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sync()
    start = time.perf_counter()
    for _ in range(spec["steps"]):
        step()
    sync()
    seconds = (time.perf_counter() - start) / spec["steps"]
    result = {"step_s": seconds, "tokens_per_s": spec["tokens"] / seconds, "setup_rss_mb": setup_rss,
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "threads": torch.get_num_threads(), "torch": torch.__version__}
    if device.type == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


# ---------------------------------------------------------------- parent: plan, run, report

def spec_for(args, **overrides) -> dict:
    spec = dict(impl="genoformer", attention="lsh", tokens=16384, depth=2, reversible=True, step="train",
                d_model=256, heads=4, bucket=64, n_hashes=4, vocab=DNA_VOCAB, ff_chunks=args.ff_chunks,
                device=args.device, bf16=args.bf16, threads=args.threads, warmup=args.warmup, steps=1,
                mmap_threshold=args.mmap_threshold)
    spec.update(overrides)
    return spec


def run_child(spec: dict, timeout: float) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    tail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
    return {"error": f"exit {proc.returncode}: {tail[:200]}"}


def run_all(specs: list[dict], args) -> list[dict]:
    """Each spec `repeats` times, interleaved; median time, max peak RSS."""
    runs = [[] for _ in specs]
    for _ in range(args.repeats):
        for i, spec in enumerate(specs):
            result = run_child(spec, args.timeout)
            runs[i].append(result)
            status = result.get("error") or f"{result['step_s']:.2f} s"
            print(f"  {label(spec)}: {status}", file=sys.stderr, flush=True)
    rows = []
    for spec, results in zip(specs, runs):
        good = [r for r in results if "error" not in r]
        row = {**spec, "runs": len(good)}
        if not good:
            row["error"] = results[-1]["error"]
        else:
            row["step_s"] = statistics.median(r["step_s"] for r in good)
            row["tokens_per_s"] = spec["tokens"] / row["step_s"]
            for key in ("peak_rss_mb", "setup_rss_mb", "cuda_peak_mb"):
                if key in good[0]:
                    row[key] = max(r[key] for r in good)
            row["threads"] = good[0]["threads"]
        rows.append(row)
    return rows


def with_baseline(args, specs: list[dict]) -> list[dict]:
    """Each genoformer spec followed by the same spec for --baseline-root's checkout (when given)."""
    if not args.baseline_root:
        return specs
    out = []
    for spec in specs:
        out.append(spec)
        if spec["impl"] == "genoformer":
            out.append(spec | {"impl": "genoformer@base", "root": str(Path(args.baseline_root).resolve())})
    return out


def label(spec: dict) -> str:
    extra = "" if spec["reversible"] else " plain"
    return f"{spec['impl']}/{spec['attention']}{extra} {spec['step']} T={spec['tokens']} depth={spec['depth']}"


def table(title: str, rows: list[dict]) -> None:
    print(f"\n## {title}")
    print(f"{'impl':<16}{'attn':<7}{'step':<7}{'rev':<5}{'depth':>6}{'tokens':>9}{'step s':>10}"
          f"{'tok/s':>10}{'us/tok':>9}{'peak MB':>10}{'setup MB':>10}")
    for r in rows:
        head = f"{r['impl']:<16}{r['attention'] if r['impl'].startswith('genoformer') else '-':<7}{r['step']:<7}" \
               f"{'y' if r['reversible'] else 'n':<5}{r['depth']:>6}{r['tokens']:>9}"
        if "error" in r:
            print(f"{head}  {r['error']}")
            continue
        peak = r.get("cuda_peak_mb", r["peak_rss_mb"])
        print(f"{head}{r['step_s']:>10.3f}{r['tokens_per_s']:>10.0f}{1e6 / r['tokens_per_s']:>9.1f}"
              f"{peak:>10.0f}{r['setup_rss_mb']:>10.0f}")


def find(rows, **where) -> dict | None:
    hits = [r for r in rows if all(r.get(k) == v for k, v in where.items()) and "error" not in r]
    return hits[0] if hits else None


def peers(args) -> dict:
    lengths = args.tokens or ([2048] if args.quick else [16384, 65536])
    specs = []
    for T in lengths:
        specs += [spec_for(args, impl=impl, attention=attn, tokens=T)
                  for impl, attn in (("hf", "lsh"), ("lucid", "lsh"), ("genoformer", "lsh"), ("genoformer", "local"))]
        specs += [spec_for(args, impl=impl, attention=attn, tokens=T, step="infer")
                  for impl, attn in (("genoformer", "lsh"), ("genoformer", "local"), ("sdpa", "full"))]
    rows = run_all(with_baseline(args, specs), args)
    table("peers: one training step (forward + backward) and inference", rows)
    T = lengths[-1]
    ours, local = find(rows, impl="genoformer", attention="lsh", tokens=T, step="train"), \
        find(rows, impl="genoformer", attention="local", tokens=T, step="train")
    peer_rows = [r for r in (find(rows, impl="hf", tokens=T), find(rows, impl="lucid", tokens=T)) if r]
    ratios = {}
    if ours and peer_rows:
        ratios["speed_vs_fastest_peer"] = ours["tokens_per_s"] / max(r["tokens_per_s"] for r in peer_rows)
        ratios["memory_vs_leanest_peer"] = ours["peak_rss_mb"] / min(r["peak_rss_mb"] for r in peer_rows)
    if ours and local:
        ratios["lsh_step_over_local_step"] = ours["step_s"] / local["step_s"]
    lsh_inf, sdpa_inf = find(rows, impl="genoformer", attention="lsh", tokens=T, step="infer"), \
        find(rows, impl="sdpa", tokens=T, step="infer")
    if lsh_inf and sdpa_inf:
        ratios["lsh_inference_speedup_vs_sdpa"] = sdpa_inf["step_s"] / lsh_inf["step_s"]
    base = find(rows, impl="genoformer@base", attention="lsh", tokens=T, step="train")
    if ours and base:
        ratios["step_over_baseline_checkout"] = ours["step_s"] / base["step_s"]
        ratios["peak_over_baseline_checkout"] = ours["peak_rss_mb"] / base["peak_rss_mb"]
    print(f"\nat {T} tokens (goals: speed >= 4, memory <= 0.2, lsh/local <= 1.25): "
          + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    return {"rows": rows, "ratios": ratios}


def lengths(args) -> dict:
    sweep = [1024, 4096] if args.quick else args.lengths
    specs = [spec_for(args, attention=kind, tokens=T) for T in sweep for kind in ("lsh", "local", "full")
             if kind != "full" or T <= args.full_max]
    rows = run_all(specs, args)
    table("length sweep: training step, time per token", rows)
    return {"rows": rows}


def depths(args) -> dict:
    T = 2048 if args.quick else 65536
    sweep = [2, 4] if args.quick else args.depths
    specs = [spec_for(args, attention=args.depth_attention, tokens=T, depth=depth, reversible=rev)
             for depth in sweep for rev in (True, False) if rev or depth <= args.plain_max_depth]
    rows = run_all(with_baseline(args, specs), args)
    table(f"depth sweep at {T} tokens: reversible vs plain residual", rows)
    key = "cuda_peak_mb" if args.device == "cuda" else "peak_rss_mb"
    ratios = {}
    for rev in (True, False):
        deepest = max(d for d in sweep if rev or d <= args.plain_max_depth)
        lo, hi = (find(rows, impl="genoformer", depth=d, reversible=rev) for d in (sweep[0], deepest))
        if lo and hi and deepest > sweep[0]:
            ratios[f"{'reversible' if rev else 'plain'}_peak_{deepest}_over_{sweep[0]}"] = hi[key] / lo[key]
    print("\n(goal: reversible <= 1.2) " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    return {"rows": rows, "ratios": ratios}


def million(args) -> dict:
    T = 4096 if args.quick else MILLION_TOKENS
    spec = spec_for(args, tokens=T, depth=6, step="adamw", warmup=0)
    rows = run_all(with_baseline(args, [spec]), args)
    table(f"one AdamW training step of the default DNA model on {T} tokens (1 Mb as 6-mers)", rows)
    row = rows[0]
    if "error" not in row:
        peak = row.get("cuda_peak_mb", row["peak_rss_mb"])
        print(f"\npeak {'CUDA allocated' if 'cuda_peak_mb' in row else 'RSS'} {peak / 1024:.2f} GB "
              f"(goal <= 4 GB), step {row['step_s']:.1f} s")
    return {"rows": rows}


PARTS = {"peers": peers, "length": lengths, "depth": depths, "million": million}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=[*PARTS, "all"], default="all")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--json", type=Path, help="also write all rows and ratios here")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--bf16", action="store_true", help="run steps under bf16 autocast")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 3, quick 1)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default 1, quick 0)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads per run (0: torch's default)")
    parser.add_argument("--tokens", type=int, nargs="+", help="peers: lengths (default 16384 65536)")
    parser.add_argument("--ff-chunks", type=int, default=1,
                        help="genoformer feed-forward chunks (at least; long inputs get more, see reversible.py)")
    parser.add_argument("--mmap-threshold", type=int, default=16 * 2 ** 20,
                        help="glibc mmap threshold in bytes for every run, as the genoformer CLI sets it "
                             "(genoformer/allocator.py); 0 leaves glibc's default")
    parser.add_argument("--full-max", type=int, default=65536, help="longest length for full attention")
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096 * 2**i for i in range(7)],
                        help="length sweep (default 4K .. 262K tokens)")
    parser.add_argument("--depths", type=int, nargs="+", default=[2, 4, 8, 16, 24], help="depth sweep")
    parser.add_argument("--plain-max-depth", type=int, default=24,
                        help="deepest plain-residual run (its activations grow with depth)")
    parser.add_argument("--depth-attention", default="lsh", choices=["lsh", "local", "full"])
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per run")
    parser.add_argument("--baseline-root", help="another genoformer checkout to measure beside this one")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(measure(json.loads(args.child))), flush=True)
        return
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.warmup = (0 if args.quick else 1) if args.warmup is None else args.warmup
    print(f"# reformer_bench: {platform.node()} python {platform.python_version()}, device {args.device}, "
          f"repeats {args.repeats}, warmup {args.warmup}{', quick' if args.quick else ''}")
    report = {"args": {k: str(v) for k, v in vars(args).items() if k != "child"}}
    for name in (PARTS if args.part == "all" else [args.part]):
        report[name] = PARTS[name](args)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
