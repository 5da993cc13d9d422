"""Training: TrainConfig and train(config) -> summary, for the mlm, variant and pattern tasks.

Exact resume: windows come from a seeded RandomWindowSampler positioned by the step count, and
every step reseeds torch from (seed, step) before it draws masks or LSH rotations, so a run
resumed from a checkpoint (weights, optimizer, scheduler, step) repeats an uninterrupted run's
losses on CPU. The run folder holds checkpoints/, metrics.csv (step, split, metric, value),
summary.json and config.json. Under `torchrun --nproc_per_node N` the same call trains with
DistributedDataParallel (distributed.py); batch_size is per rank.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from genoformer import distributed
from genoformer.coords import Interval, parse_region, read_bed
from genoformer.datasets import RandomWindowSampler, WindowDataset
from genoformer.errors import CheckpointError, NumericalError, OutputError, UsageError
from genoformer.io import checkpoint as ckpt
from genoformer.model.config import ReformerConfig, atomic_write
from genoformer.model.heads import TASKS, GenoModel
from genoformer.tasks import MAIN_METRIC, forward_loss, metrics
from genoformer.tokenize import KmerTokenizer
from genoformer.windows import check_window_size, tile

# what a resumed run may change (max_steps re-spans the schedule); the rest comes from the checkpoint
RESUME_OVERRIDES = ("max_steps", "stop_after", "device", "progress", "val_every", "ckpt_every")


@dataclass
class TrainConfig:
    task: str = "mlm"
    reference: str | None = None
    bam: str | None = None
    truth_vcf: str | None = None
    confident_bed: str | None = None
    bed: list[str] = field(default_factory=list)  # pattern: BED/GFF class tracks (none: soft-masked repeats)
    train_regions: list[str] | None = None  # region strings or BED files; None: whole reference
    val_regions: list[str] | None = None
    window: int = 1_000_000
    k: int = 6
    stride: int | None = None
    d_model: int = 256
    depth: int = 6
    heads: int = 4
    bucket_size: int = 64
    n_hashes: int = 4
    attention: str | list[str] = "lsh"
    max_steps: int = 1000
    stop_after: int | None = None  # stop (with a checkpoint) at this step; the schedule still spans max_steps
    lr: float = 3e-4
    warmup_steps: int | None = None  # None: a tenth of max_steps
    weight_decay: float = 0.01
    batch_size: int = 1
    grad_accum: int = 1
    grad_clip: float = 1.0
    mask_fraction: float = 0.15
    mask_span: int = 3
    device: str = "auto"
    seed: int = 0
    val_every: int = 200
    val_windows: int = 8  # validate on the first N windows tiling the validation regions
    ckpt_every: int = 500
    out: str = "run"
    init_from: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise UsageError(f"unknown task {self.task!r}; use one of {', '.join(TASKS)}")
        for name in ("max_steps", "batch_size", "grad_accum", "val_every", "ckpt_every", "val_windows", "mask_span"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.stop_after is not None and not 0 < self.stop_after <= self.max_steps:
            raise UsageError(f"stop-after must be in 1..max-steps ({self.max_steps}), got {self.stop_after}")
        if self.warmup_steps is not None and (isinstance(self.warmup_steps, bool) or
                                              not isinstance(self.warmup_steps, int) or self.warmup_steps < 0):
            raise UsageError(f"warmup-steps must be a non-negative integer, got {self.warmup_steps!r}")
        for name in ("lr", "weight_decay", "grad_clip", "mask_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"{name.replace('_', '-')} must be a number, got {value!r}")
        if not (self.lr > 0 and 0 < self.mask_fraction < 1 and self.grad_clip > 0):
            raise UsageError("lr and grad-clip must be > 0, mask-fraction in (0, 1)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"device must be auto, cpu or cuda, got {self.device!r}")

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"unknown training option {unknown[0]!r}", hint=f"known: {', '.join(sorted(known))}")
        return cls(**values)


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device cuda requested but no CUDA GPU is available", hint="use --device cpu or auto")
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)


def _regions(specs: list[str] | None, contigs: dict[str, int], what: str) -> list[Interval] | None:
    if specs is None:
        return None
    out: list[Interval] = []
    for spec in specs:
        out += read_bed(spec, contigs) if Path(spec).is_file() else [parse_region(spec, contigs)]
    if not out:
        raise UsageError(f"{what} regions are empty ({', '.join(specs)} holds no intervals)")
    return out


def _overlap(a: list[Interval], b: list[Interval]) -> Interval | None:
    for x in a:
        for y in b:
            if x.contig == y.contig and x.start < y.end and y.start < x.end:
                return Interval(x.contig, max(x.start, y.start), min(x.end, y.end))
    return None


def build_data(config: TrainConfig, tokenizer: KmerTokenizer, ranks: int = 1):
    """(train dataset, train sampler, val dataset or None, class names); the sampler feeds all `ranks`."""
    from genoformer.io.alignments import Alignments
    from genoformer.io.fasta import Reference
    from genoformer.io.tracks import Tracks
    from genoformer.io.variants import GENOTYPES, TruthVariants

    if config.reference is None:
        raise UsageError("give a reference FASTA (--reference)")
    if config.task == "variant" and (config.bam is None or config.truth_vcf is None):
        raise UsageError("task variant needs --bam (read evidence) and --truth-vcf (labels)")
    unused = {"mlm": ("bam", "truth_vcf", "confident_bed", "bed"), "variant": ("bed",),
              "pattern": ("truth_vcf", "confident_bed")}[config.task]
    given = [name for name in unused if getattr(config, name)]
    if given:
        raise UsageError(f"task {config.task} does not use --{given[0].replace('_', '-')}")
    check_window_size(config.window)
    if config.window < tokenizer.k:
        raise UsageError(f"window {config.window:,} is smaller than k = {tokenizer.k}: not one k-mer fits")
    ref = Reference(config.reference)
    train_iv = _regions(config.train_regions, ref.contigs, "training")
    val_iv = _regions(config.val_regions, ref.contigs, "validation")
    if val_iv is not None:
        clash = _overlap(val_iv, train_iv or [Interval(c, 0, n) for c, n in ref.contigs.items()])
        if clash is not None:
            raise UsageError(f"validation regions overlap the training regions at {clash.to_region()}",
                             hint="give --train-regions and --val-regions that do not share bases")
    sources: dict = {}
    if config.task == "variant":
        sources["variants"] = TruthVariants(config.truth_vcf, ref)
        sources["confident"] = read_bed(config.confident_bed, ref.contigs) if config.confident_bed else None
    if config.bam is not None:
        sources["alignments"] = Alignments(config.bam, ref)
    class_names: list[str] = list(GENOTYPES) if config.task == "variant" else []
    if config.task == "pattern":
        if config.bed:
            sources["tracks"] = Tracks.from_files(config.bed, ref.contigs)
            class_names = sources["tracks"].class_names
        else:
            class_names = ["soft_masked"]
    n_samples = config.max_steps * config.batch_size * config.grad_accum * ranks
    sampler = RandomWindowSampler(train_iv, config.window, n_samples, seed=config.seed, contig_lengths=ref.contigs)
    train_ds = WindowDataset(ref, [], tokenizer, **sources)
    val_ds = None
    if val_iv is not None:
        windows = tile(val_iv, config.window, contig_lengths=ref.contigs)[:config.val_windows]
        val_ds = WindowDataset(ref, windows, tokenizer, **sources)
    return train_ds, sampler, val_ds, class_names


def _collate(items: list[dict]) -> dict:
    return {key: torch.stack([it[key] for it in items]) for key, v in items[0].items() if isinstance(v, torch.Tensor)}


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7919) % (2 ** 63)


def _schedule(config: TrainConfig):
    warmup = config.max_steps // 10 if config.warmup_steps is None else config.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(config.max_steps - warmup, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))  # cosine down to lr / 10
    return factor


def _build_model(config: TrainConfig, tokenizer: KmerTokenizer, n_classes: int, n_evidence: int,
                 pretrained: GenoModel | None) -> GenoModel:
    if pretrained is not None:  # the architecture always comes from the pre-trained checkpoint
        model = GenoModel(pretrained.encoder.config, tokenizer, config.task, n_classes, n_evidence)
        model.encoder.load_state_dict(pretrained.encoder.state_dict())
        return model
    model_config = ReformerConfig(vocab_size=tokenizer.vocab_size, d_model=config.d_model, depth=config.depth,
                                  heads=config.heads, bucket_size=config.bucket_size, n_hashes=config.n_hashes,
                                  attention=config.attention, window_size=config.bucket_size)
    return GenoModel(model_config, tokenizer, config.task, n_classes, n_evidence)


def _validate(model, config, val_ds, device) -> dict[str, float]:
    model.eval()
    gen = torch.Generator().manual_seed(config.seed)  # the same masks at every validation
    outputs, losses = [], []
    with torch.no_grad(), _autocast(device):
        for i in range(0, len(val_ds), config.batch_size):
            batch = _collate([val_ds[j] for j in range(i, min(i + config.batch_size, len(val_ds)))])
            loss, out = forward_loss(model, config.task, batch, device, generator=gen,
                                     mask_fraction=config.mask_fraction, mask_span=config.mask_span)
            losses.append(float(loss))
            outputs.append(out)
    model.train()
    return {"loss": sum(losses) / len(losses)} | metrics(config.task, outputs)


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def resume(run_dir: str | os.PathLike, **overrides) -> dict:
    """Continue a run from its latest checkpoint exactly; only RESUME_OVERRIDES may be changed."""
    bad = sorted(set(overrides) - set(RESUME_OVERRIDES))
    if bad:
        raise UsageError(f"{bad[0]} cannot change a resumed run; only {', '.join(RESUME_OVERRIDES)} may")
    folder = ckpt.resolve(run_dir)
    saved = ckpt.load_checkpoint(folder)[1].get("train_config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{folder / ckpt.META}: holds no training config to resume")
    try:  # the run folder may have moved; a stop-after of the interrupted run does not carry over
        config = TrainConfig.from_dict(saved | {"stop_after": None, "out": str(folder.parent.parent)} | overrides)
    except (UsageError, TypeError) as e:
        raise CheckpointError(f"{folder / ckpt.META}: bad training config ({e})") from None
    return _run(config, folder)


def _write_metrics(path: Path, rows: list[tuple], keep_until: int | None = None) -> None:
    if keep_until is not None:  # a resumed run drops what the interrupted one logged after its checkpoint
        old = list(csv.reader(path.open())) if path.is_file() else [["step", "split", "metric", "value"]]
        # a row cut short by a kill has fewer fields, or a step past the checkpoint
        kept = [r for r in old[1:] if len(r) == 4 and r[0].isdigit() and int(r[0]) <= keep_until]
        text = "\n".join(",".join(r) for r in [old[0], *kept]) + "\n"
        atomic_write(path, text.encode())
        return
    new = not path.is_file()
    with path.open("a", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(["step", "split", "metric", "value"])
        writer.writerows(rows)


def train(config: TrainConfig) -> dict:
    """Train and return the summary (also written to OUT/summary.json); `losses` maps step -> training loss."""
    return _run(config, None)


def _run(config: TrainConfig, resume_from: Path | None) -> dict:
    state, pretrained = None, None
    if resume_from is None and ckpt.read_pointer(config.out) is not None:
        raise OutputError(f"{config.out}: already holds a training run",
                          hint="continue it with --resume, or give another --out")
    if resume_from is None and config.init_from is not None:
        pretrained = ckpt.load_checkpoint(config.init_from)[0]
    device = _device(config.device)
    created_group = distributed.init(device)
    device = distributed.local_device(device)
    rank, ranks = distributed.world()
    torch.manual_seed(config.seed)
    tokenizer = KmerTokenizer(config.k, config.stride) if pretrained is None else pretrained.tokenizer
    train_ds, sampler, val_ds, class_names = build_data(config, tokenizer, ranks)
    from genoformer.io.alignments import EVIDENCE_FEATURES

    n_evidence = len(EVIDENCE_FEATURES) if train_ds.alignments is not None else 0
    n_classes = {"mlm": 0, "variant": 3, "pattern": len(class_names)}[config.task]
    step = 0
    if resume_from is not None:
        model, meta, state = ckpt.load_checkpoint(resume_from, with_state=True)
        step = int(meta["step"])
    else:
        model = _build_model(config, tokenizer, n_classes, n_evidence, pretrained)
    model.to(device).train()
    net = model
    if ranks > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    decay = [p for p in model.parameters() if p.dim() >= 2]  # matrices and embeddings; not norms and biases
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config))
    best = {"metric": None, "step": None}
    if state is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            best = state["best"]
            torch.set_rng_state(state["rng"]["torch"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{resume_from / ckpt.STATE}: does not fit this model ({e})") from None
    per_step = config.batch_size * config.grad_accum
    sampler.load_state_dict({"seed": config.seed, "epoch": 0, "consumed": step * per_step * ranks})

    out = Path(config.out)
    metrics_path = out / "metrics.csv"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.json", (json.dumps(dataclasses.asdict(config), indent=2) + "\n").encode())
        if resume_from is not None:
            _write_metrics(metrics_path, [], keep_until=step)
    head = {"n_classes": n_classes, "n_evidence": n_evidence, "class_names": class_names}

    def save(at_step: int, metric: float | None = None) -> Path:
        meta = {"step": at_step, "seed": config.seed, "head": head, "metric": metric,
                "train_config": dataclasses.asdict(config)}
        st = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "best": best,
              "rng": {"torch": torch.get_rng_state()}, "sampler": sampler.state_dict()}
        return ckpt.save_checkpoint(out, model, meta, st)

    last = config.stop_after or config.max_steps
    windows = iter(sampler)
    losses: dict[int, float] = {}
    started, n_tokens, n_bases = time.perf_counter(), 0, 0
    bar = tqdm(total=last, initial=step, disable=not config.progress or rank != 0, desc=config.task, unit="step")
    while step < last:
        torch.manual_seed(_step_seed(config.seed, step))  # masks, LSH rotations, dropout of this step
        gen = torch.Generator().manual_seed(_step_seed(config.seed, step))
        total = 0.0
        for _ in range(config.grad_accum):
            drawn = [next(windows) for _ in range(config.batch_size * ranks)]
            batch = _collate([train_ds[w] for w in drawn[rank * config.batch_size:(rank + 1) * config.batch_size]])
            with _autocast(device):
                loss, _ = forward_loss(net, config.task, batch, device, generator=gen,
                                       mask_fraction=config.mask_fraction, mask_span=config.mask_span)
            (loss / config.grad_accum).backward()
            total += float(loss.detach()) / config.grad_accum
            n_tokens += int(batch["token_mask"].sum()) * ranks
            n_bases += int(batch["valid"].sum()) * ranks
        total = distributed.mean(total, device)
        if not math.isfinite(total):
            raise NumericalError(f"training loss is {total} at step {step + 1}",
                                 hint="lower --lr; the last good checkpoint is in " + str(out / "checkpoints"))
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        step += 1
        losses[step] = total
        elapsed = max(time.perf_counter() - started, 1e-9)
        rows = [(step, "train", "loss", f"{total:.6g}"), (step, "train", "lr", f"{lr:.6g}")]
        bar.set_postfix(loss=f"{total:.4f}", tok_s=f"{n_tokens / elapsed:,.0f}", bases_s=f"{n_bases / elapsed:,.0f}")
        bar.update(1)
        if rank != 0:
            continue
        metric = None
        if val_ds is not None and (step % config.val_every == 0 or step == last):
            val = _validate(model, config, val_ds, device)
            rows += [(step, "val", name, f"{value:.6g}") for name, value in val.items()]
            metric = val[MAIN_METRIC[config.task]]
        _write_metrics(metrics_path, rows)
        is_best = metric is not None and not math.isnan(metric) and (best["metric"] is None or metric > best["metric"])
        if is_best:
            best = {"metric": metric, "step": step}
        if step % config.ckpt_every == 0 or step == last or metric is not None:
            folder = save(step, metric)
            if is_best:
                ckpt.set_pointer(out, ckpt.BEST, folder, metric)
            ckpt.prune(out)
    bar.close()
    elapsed = time.perf_counter() - started
    summary = {"task": config.task, "step": step, "max_steps": config.max_steps, "device": str(device),
               "ranks": ranks, "final_loss": losses.get(step), "best": best,
               "checkpoint": str(ckpt.resolve(out)) if rank == 0 else None, "seconds": elapsed,
               "tokens_per_s": n_tokens / max(elapsed, 1e-9), "bases_per_s": n_bases / max(elapsed, 1e-9),
               "weights_sha256": hashlib.sha256(ckpt.weights_bytes(model)).hexdigest(), "losses": losses}
    if rank == 0:
        atomic_write(out / "summary.json", (json.dumps(summary, indent=2, default=str) + "\n").encode())
    if created_group:
        distributed.close()
    return summary
