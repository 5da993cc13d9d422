"""Does long range earn its cost? Accuracy against partner distance for LSH, local and full attention, short
and long windows, on the simulated long-range task (genoformer.simulate.long_range).

Data: `simulate_long_range` with one contig per --distances value and --pairs pairs each (seeded by the
run's seed); the last --test-share of each contig's pairs are held out, and training windows come only
from the part of each contig before them. A site's class (A or B, half each) is its partner's type, `distance`
bases away; the site reads the same in both classes, so a model that cannot reach the partner is at
chance (0.5).

Models: one `pattern` model (k 1, classes long_range_A / long_range_B) per attention x window,
trained on every distance at once for the same number of steps: training windows of W bases are drawn
from intervals of W + W/4 bases centred on each training site, so a window holds its site within W/8
of its centre and the partner whenever distance < W/2 - W/8. Full attention runs only where the
window's tokens are at most --full-max-tokens (its memory grows with the square of them).

Score: for each held-out site, a window of W bases centred on it (shifted inward at a contig end) is
run through the model, and the site is called A when the mean P(A) over its bases exceeds the mean
P(B); balanced accuracy per distance (the mean of A's and B's share called right), so a model that
always answers A scores 0.5. Baseline, per window: a motif-scan rule that knows both partner motifs
and calls the type of the nearest one in the same window (half right where there is none): the
ceiling a window allows. The table prints genoformer - that rule for each model, and each model's
site AUROC (does it find the sites at all, whatever their class: P(A) + P(B) per base of the scored
windows against "is the scored site").

CPU defaults (distances 64 and 160, windows 256 and 512 bases, 2,048 pairs per distance, d_model 64,
depth 2, LSH buckets and local blocks of 32 tokens, lr 1e-3, batch 8, 4,000 steps, balanced class
weights) are what the 2-core CPU affords; even so only full attention learnt the class, in one seed of
three (docs/benchmarks.md, "Long range"). A window of 256 holds the partners at
64 (< 96) and not at 160, a window of 512 both (< 192); local attention reaches 32-63 tokens back
per layer and none forward beyond its block, so at 160 it sees neither side's partner. What it
takes to learn the task at all, measured on window 256, distance 64, full attention (the class,
not only where the sites are), balanced weights unless said: unweighted, d_model 32, 1,500 steps
found the sites (site AUROC 0.94) but not their class (0.49); 128 pairs per distance (96 to train on),
800 steps: 0.49-0.56; 2,048 pairs with d_model 32: 0.50 after 1,500 steps (depth 2) and 4,000 steps
(depth 4); 2,048 pairs with d_model 64: 0.989 after 4,000 steps (seed 0; with these defaults seeds 1
and 2 stay at chance: the class is learnt in a sudden drop of the loss that 4,000 steps do not always
reach). At window 512 from scratch (distances 64 and 160) LSH and full attention were both at
0.500 after 4,000 steps (site AUROC 0.99): the partner is 12 bases of 512. Hence --extend-steps,
a length warm-up as HyenaDNA's sequence-length warm-up: each longer window starts from the shorter
window's model (same attention and seed; the output layer new) and trains that many steps at its
own window.
On a GPU the question the project asks is e.g. --distances 10000,50000,200000 --windows 8192,524288.
Several processes (one per attention, window or seed) give one table with --merge.

    python benchmarks/quality/long_range_quality.py [--distances 64,160] [--windows 256,512]
        [--attentions lsh,local,full] [--budget 4000|30m] [--extend-steps 2000] [--seeds 0,1,2] [--json PATH]
    python benchmarks/quality/long_range_quality.py --merge RUN1.json RUN2.json ... --json OUT.json
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import pysam
import torch
from quality_common import (
    Measurement,
    TrainConfig,
    add_common_args,
    add_model_args,
    load_checkpoint,
    machine,
    minus,
    model_forward,
    model_options,
    print_summary,
    save_json,
    spread,
    steps_for,
    table,
    train,
    with_options,
    work_dir,
)

from genoformer.data.datasets import WindowDataset
from genoformer.data.windows import Window
from genoformer.io.fasta import Reference
from genoformer.simulate.long_range import PARTNERS, LongRangeExample, block_length, simulate_long_range
from genoformer.train.metrics import auroc

MOTIF_SCAN = "motif-scan rule (knows both partner motifs)"


def ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated integers") from None
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers")
    return values


def non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a whole number >= 0")
    return value


def json_options(text: str) -> dict:
    try:
        options = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"{text!r}: not JSON ({e})") from None
    if not isinstance(options, dict):
        raise argparse.ArgumentTypeError(f"{text!r}: give a JSON object of training options")
    return options


def read_pairs(example: LongRangeExample) -> list[dict]:
    lines = example.pairs.read_text().splitlines()
    header = lines[0].split("\t")
    return [{k: v if k in ("contig", "partner") else int(v) for k, v in zip(header, line.split("\t"))}
            for line in lines[1:]]


def split_pairs(pairs: list[dict], test_share: float) -> tuple[list[dict], list[dict], dict[str, int]]:
    """(training pairs, held-out pairs, {contig: first base of its held-out part}): the last pairs of each contig."""
    train_pairs, test_pairs, cut = [], [], {}
    for contig in dict.fromkeys(p["contig"] for p in pairs):
        rows = [p for p in pairs if p["contig"] == contig]
        n_test = max(1, round(test_share * len(rows)))
        train_pairs += rows[:-n_test]
        test_pairs += rows[-n_test:]
        first = rows[-n_test]
        cut[contig] = min(first["site_start"], first["partner_start"]) - abs(first["offset"]) // 2
    return train_pairs, test_pairs, cut


def reaches(window: int, distance: int) -> bool:
    """Whether every training window of `window` bases holds its site's partner `distance` bases away."""
    return distance < window // 2 - window // 8


def training_regions(pairs: list[dict], cut: dict[str, int], window: int, out: Path) -> Path:
    """A BED of W + W/4 bases around each training site whose partner its windows hold (see reaches), cut
    before the held-out part of its contig. A site whose partner lies outside has a label nothing in the
    window explains (with them, seed 0's window-256 full-attention model stayed at chance; without them it
    learnt: one run each)."""
    lines = []
    for p in pairs:
        if not reaches(window, abs(p["offset"])):
            continue
        centre = (p["site_start"] + p["site_end"]) // 2
        start, end = max(centre - window // 2 - window // 8, 0), min(centre + window // 2 + window // 8, cut[p["contig"]])
        if end - start >= window:
            lines.append(f"{p['contig']}\t{start}\t{end}\n")
    out.write_text("".join(lines))
    return out


def eval_window(p: dict, window: int, length: int) -> int:
    """Start of the window of `window` bases centred on the pair's site, shifted inward at the contig ends."""
    centre = (p["site_start"] + p["site_end"]) // 2
    return int(np.clip(centre - window // 2, 0, max(length - window, 0)))


def motif_scan(sequence: str, site: int) -> str | None:
    """The type of the partner motif nearest to `site` in `sequence` (None when neither occurs)."""
    best, kind = None, None
    for name, motif in PARTNERS.items():
        at = sequence.find(motif)
        while at >= 0:
            if best is None or abs(at - site) < best:
                best, kind = abs(at - site), name
            at = sequence.find(motif, at + 1)
    return kind


def model_calls(run: Path, reference: Path, pairs: list[dict], window: int, lengths: dict[str, int],
                seed: int) -> tuple[list[str], float]:
    """(A or B for each pair's site, site AUROC) from the run's checkpoint (see the module docstring).

    Site AUROC: P(A) + P(B) of each base of the scored windows against "is a site base": whether the
    model finds the sites at all, before telling their classes apart."""
    model, meta, _ = load_checkpoint(run)
    model.eval()
    classes = meta["head"]["class_names"]
    column = {kind: classes.index(f"long_range_{kind}") for kind in PARTNERS}
    windows = []
    for p in pairs:
        start = eval_window(p, window, lengths[p["contig"]])
        end = min(start + window, lengths[p["contig"]])
        windows.append(Window(p["contig"], start, start + window, end - start))
    items = WindowDataset(Reference(reference), windows, model.tokenizer)  # the items training reads
    torch.manual_seed(seed)  # LSH rotations
    calls, scores, truth = [], [], []
    with torch.no_grad():
        for p, w, item in zip(pairs, windows, items):
            probs = torch.sigmoid(model_forward(model, [item]))[0, :w.n_valid]
            site = slice(p["site_start"] - w.start, p["site_end"] - w.start)
            mean = {kind: float(probs[site, c].mean()) for kind, c in column.items()}
            calls.append(max(mean, key=mean.get))
            scores.append(probs[:, list(column.values())].sum(1).numpy())
            truth.append(np.zeros(w.n_valid, bool))
            truth[-1][site] = True  # the other sites of the window are not marked: they only lower the AUROC
    return calls, auroc(np.concatenate(truth), np.concatenate(scores))


def accuracy_by_distance(pairs: list[dict], calls: list[str | None]) -> dict[int, float]:
    """Balanced accuracy per distance: the mean over A and B of the share of their sites called right, a
    None call (no partner seen) counting half right, so any constant or no-call rule scores 0.5."""
    right: dict[int, dict[str, list[float]]] = {}
    for p, call in zip(pairs, calls):
        score = 0.5 if call is None else float(call == p["partner"])
        right.setdefault(abs(p["offset"]), {}).setdefault(p["partner"], []).append(score)
    return {d: float(np.mean([np.mean(v) for v in by_type.values()])) for d, by_type in sorted(right.items())}


def pattern_config(args, example: LongRangeExample, regions: Path, window: int, attention: str, out: Path,
                   seed: int, options: dict) -> TrainConfig:
    config = TrainConfig(task="pattern", reference=str(example.reference),
                         bed=[str(p) for p in example.class_beds.values()], train_regions=[str(regions)],
                         window=window, k=1, model=model_options(args, attention), lr=args.lr,
                         # a site is 12 bases of a window of hundreds: its few bases must weigh as much as the rest
                         class_weights="balanced",
                         batch_size=args.batch_size, max_steps=1, ckpt_every=10 ** 9, val_every=10 ** 9, seed=seed,
                         device="cpu", out=str(out), progress=False)
    return with_options(config, options)


def fits(args, attention: str, window: int) -> bool:
    return attention != "full" or window <= args.full_max_tokens  # k 1: a token a base


def run_seed(args, folder: Path, seed: int, steps: int, options: dict) -> list[dict]:
    """Every (attention, window) model and the motif-scan rule at each window, for one seed."""
    example = simulate_long_range(folder / f"example-seed{seed}", seed, distances=args.distances, pairs=args.pairs)
    with pysam.FastaFile(str(example.reference)) as fa:
        genome = {name: fa.fetch(name) for name in fa.references}
    train_pairs, test_pairs, cut = split_pairs(read_pairs(example), args.test_share)
    rows, shorter = [], {}  # attention -> (its model at the window before, that window)
    for window in sorted(args.windows):
        scan = [motif_scan(genome[p["contig"]][s:s + window], p["site_start"] - s)
                for p in test_pairs for s in [eval_window(p, window, len(genome[p["contig"]]))]]
        rule = accuracy_by_distance(test_pairs, scan)
        rows.append({"model": MOTIF_SCAN, "attention": "-", "window": window, "seed": seed, "accuracy": rule})
        regions = training_regions(train_pairs, cut, window, folder / f"train-w{window}-seed{seed}.bed")
        for attention in args.attentions:
            row = {"model": "genoformer pattern", "attention": attention, "window": window, "seed": seed,
                   "rule": rule}
            if not fits(args, attention, window):
                rows.append(row | {"accuracy": None, "note": f"{window} tokens > --full-max-tokens"})
                continue
            out = folder / f"{attention}-w{window}-seed{seed}"
            config = dataclasses.replace(pattern_config(args, example, regions, window, attention, out, seed, options),
                                         max_steps=steps)
            if args.extend_steps and attention in shorter:
                config = dataclasses.replace(config, init_from=str(shorter[attention][0]), max_steps=args.extend_steps)
                row["from_window"] = shorter[attention][1]
            summary = train(config)
            shorter[attention] = out, window
            calls, site_auroc = model_calls(out, example.reference, test_pairs, window,
                                            {c: len(seq) for c, seq in genome.items()}, seed)
            rows.append(row | {"accuracy": accuracy_by_distance(test_pairs, calls), "site_auroc": site_auroc,
                               "steps": config.max_steps, "train_seconds": summary["seconds"],
                               "final_loss": summary["final_loss"]})
    return rows


def measurements(rows: list[dict], distances: list[int], seeds: list[int]) -> list[Measurement]:
    """Per seed, per distance: the longest-window LSH model against the motif-scan rule at that window."""
    longest = max(r["window"] for r in rows)
    out = []
    for seed in seeds:
        lsh = next((r for r in rows if r["seed"] == seed and r["window"] == longest and r["attention"] == "lsh"), None)
        rule = next(r for r in rows if r["seed"] == seed and r["window"] == longest and r["attention"] == "-")
        runs = [Measurement(f"accuracy at distance {d} (LSH, window {longest})",
                            lsh["accuracy"][d] if lsh and lsh["accuracy"] else None,
                            {f"{MOTIF_SCAN}, window {longest}": rule["accuracy"][d], "chance": 0.5})
                for d in distances]
        out.append(dataclasses.replace(runs[0], also=runs[1:]))
    return out


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap, "long_range_quality", "4000", baselines=False)
    ap.add_argument("--distances", type=ints, default=[64, 160], help="partner distances in bases")
    ap.add_argument("--windows", type=ints, default=[256, 512], help="window sizes in bases (k 1: tokens)")
    ap.add_argument("--attentions", default="lsh,local,full", help="comma-separated: lsh, local, full")
    ap.add_argument("--full-max-tokens", type=int, default=4096, help="largest window full attention runs at")
    ap.add_argument("--pairs", type=int, default=2048, help="pairs per distance (simulated)")
    ap.add_argument("--test-share", type=float, default=0.25, help="share of each distance's pairs held out")
    ap.add_argument("--options", type=json_options, default={},
                    help='training options for every model, as JSON (e.g. \'{"class_weights": "balanced"}\')')
    ap.add_argument("--extend-steps", type=non_negative, default=0,
                    help="each window after the first starts from the model of the window before (same attention and "
                         "seed) and trains this many steps at its own (default 0: every window from scratch)")
    ap.add_argument("--merge", nargs="+", metavar="JSON",
                    help="print and save (--json) one table from results of this script run as separate processes")
    add_model_args(ap, d_model=64, depth=2, bucket_size=32, attention=None, batch_size=8)
    return ap


# what merged results must share
SAME_SETTINGS = ("distances", "pairs", "test_share", "steps", "extend_steps", "model", "options")


def merge(results: list[dict]) -> dict:
    """One result from runs of the same task and training settings made as separate processes (other attentions,
    windows or seeds): their rows joined, the motif-scan rule once per seed and window."""
    first = results[0]
    for key in SAME_SETTINGS:
        for other in results[1:]:
            if other.get(key) != first.get(key):
                raise SystemExit(f"cannot merge: {key} differs ({first.get(key)!r} and {other.get(key)!r})")
    rows: dict[tuple, dict] = {}
    for result in results:
        for row in result["rows"]:
            key = (row["seed"], row["window"], row["attention"])
            if key in rows and row["attention"] != "-":
                raise SystemExit(f"cannot merge: seed {key[0]}, window {key[1]}, {key[2]} appears twice")
            rows.setdefault(key, row)
    merged = dict(first) | {
        "windows": sorted({w for r in results for w in r["windows"]}),
        "attentions": list(dict.fromkeys(a for r in results for a in r["attentions"])),
        "seeds": sorted({s for r in results for s in r["seeds"]}),
        "rows": [with_int_distances(rows[k]) for k in sorted(rows, key=lambda k: (k[0], k[1], k[2] != "-"))],
        "command": [r["command"] for r in results]}
    return merged


def with_int_distances(row: dict) -> dict:
    """A row read back from JSON, whose distance keys became strings."""
    ints = lambda acc: None if acc is None else {int(d): v for d, v in acc.items()}
    return row | {"accuracy": ints(row["accuracy"])} | ({"rule": ints(row["rule"])} if "rule" in row else {})


def report(result: dict) -> dict:
    """Print a result's table (each seed's models and, for several seeds, their mean) and return its summary."""
    distances, rows = result["distances"], result["rows"]
    label = lambda r: r["model"] if r["attention"] == "-" else f"{r['model']} {r['attention']}"
    shown = []
    for r in rows:
        note = r.get("note") or (f"from the window {r['from_window']:,} model, {r['steps']:,} steps more"
                                 if "from_window" in r else "")
        shown.append({"seed": r["seed"], "model": label(r), "window": r["window"], "note": note,
                      "site_auroc": r.get("site_auroc"),
                      **{f"d{d}": (r["accuracy"] or {}).get(d) for d in distances}})
        if r["attention"] != "-" and r["accuracy"]:
            shown.append({"seed": r["seed"], "model": f"  {label(r)} - motif scan", "window": r["window"], "note": "",
                          **{f"d{d}": minus(r["accuracy"][d], r["rule"][d]) for d in distances}})
    print(f"held-out sites: {result['test_share']:g} of {result['pairs']} pairs per distance; {result['steps']} steps "
          f"per model; chance 0.5")
    columns = [("model", "model", ""), ("window", "window", ","),
               *((f"d{d}", f"d={d:,}", ".3f") for d in distances), ("site_auroc", "site AUROC", ".3f")]
    print(table(shown, [("seed", "seed", "d"), *columns, ("note", "", "")]))
    if len(result["seeds"]) > 1:
        means = []
        for model in dict.fromkeys((label(r), r["window"]) for r in rows if r["accuracy"]):
            runs = [r for r in rows if (label(r), r["window"]) == model and r["accuracy"]]
            means.append({"model": model[0], "window": model[1], "n": len(runs),
                          "site_auroc": spread([r.get("site_auroc") for r in runs])["mean"],
                          **{f"d{d}": spread([r["accuracy"][d] for r in runs])["mean"] for d in distances},
                          **{f"r{d}": "{min:.3f}-{max:.3f}".format(**spread([r["accuracy"][d] for r in runs]))
                             for d in distances}})
        print(f"mean over seeds {', '.join(map(str, result['seeds']))}")
        print(table(means, [*columns[:2], ("n", "seeds", "d"),
                            *((f"{c}{d}", f"d={d:,}" + (" range" if c == "r" else ""), ".3f" if c == "d" else "")
                              for d in distances for c in "dr"), columns[-1]]))
    return print_summary(measurements(rows, distances, result["seeds"]), result["seeds"])


def main() -> None:
    ap = parser()
    args = ap.parse_args()
    if args.merge:
        result = merge([json.loads(Path(p).read_text()) for p in args.merge])
        result["summary"] = report(result)
        save_json(args.json, result)
        return
    short = [w for w in args.windows if not any(reaches(w, d) for d in args.distances)]
    if short:
        ap.error(f"--windows {short[0]}: holds the partner of none of --distances (a window of W holds distances "
                 f"below W/2 - W/8)")
    args.attentions = args.attentions.split(",")
    if set(args.attentions) - {"lsh", "local", "full"}:
        ap.error(f"--attentions: choose from lsh, local, full (got {','.join(args.attentions)})")
    torch.set_num_threads(args.threads)
    tmp = work_dir(args.keep)
    folder = Path(args.keep or tmp.name)
    try:
        started = time.perf_counter()
        probe_example = simulate_long_range(folder / "probe-example", 0, distances=args.distances, pairs=args.pairs)
        train_pairs, _, cut = split_pairs(read_pairs(probe_example), args.test_share)
        longest = max(args.windows)
        probe = pattern_config(args, probe_example, training_regions(train_pairs, cut, longest, folder / "probe.bed"),
                               longest, "lsh", folder / "probe", 0, args.options)
        steps, per_step = steps_for(args.budget, probe, folder)
        rows = [r for seed in args.seeds for r in run_seed(args, folder, seed, steps, args.options)]
    finally:
        if tmp is not None:
            tmp.cleanup()
    result = {"benchmark": "long_range_quality", "budget": str(args.budget), "machine": machine(),
              "distances": args.distances, "windows": args.windows, "attentions": args.attentions,
              "pairs": args.pairs, "test_share": args.test_share,
              "block_length": {d: block_length(d) for d in args.distances}, "seeds": args.seeds, "steps": steps,
              "extend_steps": args.extend_steps, "calibrated_s_per_step": per_step,
              "seconds": time.perf_counter() - started,
              "model": {k: getattr(args, k) for k in ("d_model", "depth", "heads", "bucket_size", "n_hashes", "lr",
                                                      "batch_size")},
              "options": args.options, "command": " ".join(sys.argv), "rows": rows}
    result["summary"] = report(result)
    save_json(args.json, result)


if __name__ == "__main__":
    main()
