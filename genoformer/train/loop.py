"""Training: train(config) -> summary, resume(run folder) and dry_run(config), and the step loop.

Exact resume: windows come from a seeded RandomWindowSampler positioned by the step count, and
every step reseeds torch from (seed, step) before it draws masks or LSH rotations, so a run
resumed from a checkpoint (weights, optimizer, scheduler, step) repeats an uninterrupted run's
losses on CPU. The run folder holds checkpoints/, metrics.csv (step, split, metric, value),
summary.json and config.json (run_folder.py). Under `torchrun --nproc_per_node N` the same call
trains with DistributedDataParallel (distributed.py); batch_size is per rank.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from genoformer.devices import autocast, resolve_device
from genoformer.errors import CheckpointError, NumericalError, OutputError, UsageError
from genoformer.interrupt import raise_if_terminated
from genoformer.model import checkpoint as ckpt
from genoformer.model.heads import GenoModel
from genoformer.train import distributed, run_folder
from genoformer.train.config import RESUME_OVERRIDES, ModelConfig, TrainConfig
from genoformer.train.data import TrainData, collate_fn, prepare
from genoformer.train.losses import forward_loss
from genoformer.train.schedule import optimizer_and_schedule
from genoformer.train.validate import is_better, main_metric, validate


def train(config: TrainConfig) -> dict:
    """Train and return the summary (also written to OUT/summary.json); `losses` maps step -> training loss."""
    return _run(config, None)


def resume(run_dir: str | os.PathLike, **overrides) -> dict:
    """Continue a run from its latest checkpoint exactly; only RESUME_OVERRIDES may be changed."""
    bad = sorted(set(overrides) - set(RESUME_OVERRIDES))
    if bad:
        raise UsageError(f"{bad[0]} cannot change a resumed run; only {', '.join(RESUME_OVERRIDES)} may")
    folder = ckpt.resolve(run_dir)
    saved = ckpt.load_checkpoint(folder)[1].get("train_config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{folder / ckpt.META}: holds no training config to resume")
    # the model section (per-base parts included; a run saved before them has neither) is then the
    # checkpoint's model's: see built()
    try:  # the run folder may have moved; a stop-after of the interrupted run does not carry over
        config = TrainConfig.from_dict(saved | {"stop_after": None, "out": str(folder.parent.parent)} | overrides)
    except (UsageError, TypeError) as e:
        raise CheckpointError(f"{folder / ckpt.META}: bad training config ({e})") from None
    return _run(config, folder)


def dry_run(config: TrainConfig) -> dict:
    """Check `config` and its inputs as train() would and build the model, training nothing.

    Returns the resolved config, the number of parameters, the classes and a summary of the data.
    """
    run_folder.check_fresh(config.out)
    pretrained = ckpt.load_checkpoint(config.init_from)[0] if config.init_from is not None else None
    resolve_device(config.device)
    data = prepare(config, pretrained.tokenizer if pretrained is not None else None)
    # one item of each split: the files open, parse and tokenise
    collate = collate_fn(data.train)
    collate([data.train[next(iter(data.sampler))]])
    if data.val is not None:
        collate_fn(data.val)([data.val[0]])
    model = build_model(data, pretrained)
    return {"config": dataclasses.asdict(built(data.config, model)), "model_task": data.model_task,
            "parameters": sum(p.numel() for p in model.parameters()), "classes": data.class_names,
            "data": data.summary}


def build_model(data: TrainData, pretrained: GenoModel | None) -> GenoModel:
    """A new model for `data`: the config's architecture, or the pre-trained checkpoint's encoder (with its
    weights, and the stem and decoder tensors that fit) and the config's stem, decoder and dropout."""
    head, section = data.head, data.config.model
    per_base = section.per_base_config()
    if pretrained is not None:  # the encoder's architecture always comes from the pre-trained checkpoint
        encoder = dataclasses.replace(pretrained.encoder.config, dropout=section.dropout)
        model = GenoModel(encoder, data.tokenizer, data.model_task, head["n_classes"], head["n_evidence"], per_base)
        model.load_pretrained(pretrained)
        return model
    return GenoModel(section.reformer_config(data.tokenizer.vocab_size), data.tokenizer, data.model_task,
                     head["n_classes"], head["n_evidence"], per_base)


def built(config: TrainConfig, model: GenoModel) -> TrainConfig:
    """`config` with the model section of the architecture actually built (what config.json records)."""
    return dataclasses.replace(config, model=ModelConfig.of(model.encoder.config, model.per_base))


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7919) % (2 ** 63)


def _run(config: TrainConfig, resume_from: Path | None) -> dict:
    state, pretrained = None, None
    if resume_from is None:
        run_folder.check_fresh(config.out)
    if resume_from is None and config.init_from is not None:
        pretrained = ckpt.load_checkpoint(config.init_from)[0]
    device = resolve_device(config.device)
    created_group = distributed.init(device)
    device = distributed.local_device(device)
    rank, ranks = distributed.world()
    torch.manual_seed(config.seed)
    step, model = 0, None
    if resume_from is not None:
        model, meta, state = ckpt.load_checkpoint(resume_from, with_state=True)
        step = int(meta["step"])
    fixed = model.tokenizer if model is not None else pretrained.tokenizer if pretrained is not None else None
    data = prepare(config, fixed, ranks)
    train_ds, sampler, val_ds = data.train, data.sampler, data.val
    if model is None:
        model = build_model(data, pretrained)
    config = built(data.config, model)
    model.to(device).train()
    weights = None if data.class_weights is None else torch.tensor(data.class_weights, device=device)
    net = model
    if ranks > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer, scheduler = optimizer_and_schedule(model, config)
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
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:  # read-only file system, no permission, a file in the way
            raise OutputError(f"{out}: cannot create the run folder ({e.strerror or e})") from None
        run_folder.write_config(out, config)
        if resume_from is not None:
            run_folder.truncate_metrics(metrics_path, keep_until=step)
    head = data.head

    def save(at_step: int, metric: float | None = None) -> Path:
        meta = {"step": at_step, "seed": config.seed, "head": head, "metric": metric,
                "train_config": dataclasses.asdict(config)}
        st = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "best": best,
              "rng": {"torch": torch.get_rng_state()}, "sampler": sampler.state_dict()}
        return ckpt.save_checkpoint(out, model, meta, st)

    last = config.stop_after or config.max_steps
    augment = data.augment
    windows = iter(sampler)
    collate = collate_fn(train_ds)
    losses: dict[int, float] = {}
    started, n_tokens, n_bases = time.perf_counter(), 0, 0
    bar = tqdm(total=last, initial=step, disable=not config.progress or rank != 0, desc=config.task, unit="step")
    while step < last:
        torch.manual_seed(_step_seed(config.seed, step))  # masks, LSH rotations, dropout of this step
        gen = torch.Generator().manual_seed(_step_seed(config.seed, step))
        rng = np.random.default_rng([config.seed, step, rank])  # this step's augmentation draws
        total = 0.0
        for _ in range(config.grad_accum):
            drawn = [next(windows) for _ in range(config.batch_size * ranks)]
            batch = collate([augment(train_ds[w], rng)
                             for w in drawn[rank * config.batch_size:(rank + 1) * config.batch_size]])
            with autocast(device):
                loss, _ = forward_loss(net, config.task, batch, device, generator=gen,
                                       mask_fraction=config.mask_fraction, mask_span=config.mask_span,
                                       class_weights=weights)
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
        raise_if_terminated()
        if rank != 0:
            continue
        metric = None
        if val_ds is not None and (step % config.val_every == 0 or step == last):
            val = validate(model, config, val_ds, device, weights)
            rows += [(step, "val", name, f"{value:.6g}") for name, value in val.items()]
            metric = main_metric(config.task, val)
        run_folder.append_metrics(metrics_path, rows)
        better = is_better(config.task, metric, best["metric"])
        if better:
            best = {"metric": metric, "step": step}
        if step % config.ckpt_every == 0 or step == last or metric is not None:
            folder = save(step, metric)
            if better:
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
        run_folder.write_summary(out, summary)
    if created_group:
        distributed.close()
    return summary
