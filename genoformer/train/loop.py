"""Training: train(config) -> summary, resume(run folder) and dry_run(config), and the step loop.

Exact resume: windows come from a seeded RandomWindowSampler positioned by the step count, and
every step reseeds torch from (seed, step) before it draws masks or LSH rotations, so a run
resumed from a checkpoint (weights, optimizer, scheduler, step) repeats an uninterrupted run's
losses on CPU. With `ema` the checkpoint's weights (what validation and predict read) are an
exponential moving average of the trained ones, which ride in its state for resume. The run
folder holds checkpoints/, metrics.csv (step, split, metric, value), summary.json, config.json
and training.png (run_folder.py, plots.py); one process at a time writes it (a lock). Ctrl-C or
SIGTERM saves the step reached (the update of a step is never cut in two) and says how to
continue. Under `torchrun --nproc_per_node N` the same call trains with
DistributedDataParallel (distributed.py); batch_size is per rank.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import shlex
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.contrib.logging import logging_redirect_tqdm

from genoformer import interrupt
from genoformer.devices import autocast, resolve_device
from genoformer.errors import CheckpointError, NumericalError, UsageError
from genoformer.model import checkpoint as ckpt
from genoformer.model.heads import GenoModel
from genoformer.tasks import SOFT_MASKED, TASKS
from genoformer.train import distributed, estimate, plots, run_folder
from genoformer.train.config import RESUME_OVERRIDES, ModelConfig, TrainConfig
from genoformer.train.data import TrainData, collate_fn, prepare
from genoformer.train.losses import forward_loss
from genoformer.train.progress import Progress
from genoformer.train.schedule import optimizer_and_schedule
from genoformer.train.validate import is_better, main_metric, validate

log = logging.getLogger(__name__)


def train(config: TrainConfig) -> dict:
    """Train and return the summary (also written to OUT/summary.json); `losses` maps step -> training loss."""
    with _lock(config.out):
        run_folder.check_fresh(config.out)
        return _train(config, None)


def resume(run_dir: str | os.PathLike, **overrides) -> dict:
    """Continue a run from its latest checkpoint exactly; only RESUME_OVERRIDES may be changed.

    A finished run (its last step reached, summary.json written) is left as it is; its summary is returned.
    """
    bad = sorted(set(overrides) - set(RESUME_OVERRIDES))
    if bad:
        raise UsageError(f"{bad[0]} cannot change a resumed run; only {', '.join(RESUME_OVERRIDES)} may")
    given = Path(run_dir)
    run = given.parent.parent if (given / ckpt.META).is_file() else given
    if not (run / run_folder.LOCK).exists():
        # no training ever ran here: named as such before the lock creates anything. A folder with a lock is
        # locked first, so a run still before its first checkpoint is reported as busy, not as no run
        ckpt.resolve(given)
    with _lock(run):
        folder = ckpt.resolve(run_dir)
        meta = ckpt.load_checkpoint(folder)[1]
        saved = meta.get("train_config")
        if not isinstance(saved, dict):
            raise CheckpointError(f"{folder / ckpt.META}: holds no training config to resume")
        # the model section (per-base parts included; a run saved before them has neither) is then the
        # checkpoint's model's: see built()
        try:  # the run folder may have moved; a stop-after of the interrupted run does not carry over
            config = TrainConfig.from_dict(saved | {"stop_after": None, "out": str(folder.parent.parent)} | overrides)
        except (UsageError, TypeError) as e:
            raise CheckpointError(f"{folder / ckpt.META}: bad training config ({e})") from None
        summary = run_folder.read_summary(Path(config.out))
        if int(meta["step"]) >= config.max_steps and summary is not None:
            log.info("%s: finished at step %s of %s; nothing to resume (give --max-steps to train longer)",
                     config.out, f"{int(meta['step']):,}", f"{config.max_steps:,}")
            return summary
        return _train(config, folder)


def _lock(out: str | os.PathLike):
    """The run folder's lock, held by the process that writes it (rank 0 under torchrun)."""
    return run_folder.locked(out) if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()


def dry_run(config: TrainConfig) -> dict:
    """Check `config` and its inputs as train() would and build the model, training nothing.

    Returns the resolved config, the number of parameters, the classes and a summary of the data.
    """
    run_folder.check_fresh(config.out)
    pretrained = ckpt.load_checkpoint(config.init_from)[0] if config.init_from is not None else None
    device = resolve_device(config.device)
    data = prepare(config, pretrained.tokenizer if pretrained is not None else None)
    # one item of each split: the files open, parse and tokenise
    collate = collate_fn(data.train)
    collate([data.train[next(iter(data.sampler))]])
    if data.val is not None:
        collate_fn(data.val)([data.val[0]])
    model = build_model(data, pretrained)
    config = built(data.config, model)
    seconds = estimate.step_seconds(model, data, device, _loss_weights(data, device))
    return {"config": dataclasses.asdict(config), "model_task": data.model_task,
            "parameters": sum(p.numel() for p in model.parameters()), "classes": data.class_names,
            "data": data.summary, "estimate": estimate.announce(seconds, config.stop_after or config.max_steps,
                                                                config, device)}


def build_model(data: TrainData, pretrained: GenoModel | None) -> GenoModel:
    """A new model for `data`: the config's architecture, or the pre-trained checkpoint's encoder (with its
    weights, and the stem and decoder tensors that fit) and the config's stem, decoder and dropout."""
    head, section = data.head, data.config.model
    per_base = section.per_base_config()
    if head.get("class_names") == [SOFT_MASKED]:  # the label would be an input: learn repeats from the bases
        per_base = dataclasses.replace(per_base, soft_mask_input=False)
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


def _loss_weights(data: TrainData, device: torch.device) -> dict:
    """forward_loss's weighting arguments for `data`."""
    return {"class_weights": None if data.class_weights is None else torch.tensor(data.class_weights, device=device),
            "candidate_weight": data.config.candidate_weight,
            "reference_candidate_weight": data.reference_candidate_weight}


def weight_average(model: GenoModel, decay: float, state: dict | None) -> AveragedModel | None:
    """An exponential moving average of `model`'s weights (Polyak averaging), None when `decay` is 0. On resume
    `model` holds the checkpoint's weights, which are the average: they seed it, and the trained weights
    saved beside them go back into `model`."""
    if not decay:
        return None
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    if state is not None:
        try:
            model.load_state_dict(state["ema"]["trained_weights"])
            averaged.n_averaged.fill_(state["ema"]["updates"])
        except (KeyError, TypeError, RuntimeError) as e:
            raise CheckpointError(f"the checkpoint's state holds no weight average that fits this model ({e})") \
                from None
    return averaged


def resume_command(out: Path) -> str:
    return shlex.join(["genoformer", "train", "--resume", str(out)])


def _train(config: TrainConfig, resume_from: Path | None) -> dict:
    state, pretrained = None, None
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
    loss_weights = _loss_weights(data, device)
    last = config.stop_after or config.max_steps
    out = Path(config.out)
    if rank == 0:
        log.info("training a %s model (k %d, window %s, d-model %d, depth %d, %s parameters), steps %s-%s of %s, "
                 "into %s", data.model_task, data.tokenizer.k, f"{config.window:,}", config.model.d_model,
                 config.model.depth, f"{sum(p.numel() for p in model.parameters()):,}", f"{step + 1:,}",
                 f"{last:,}", f"{config.max_steps:,}", out)
        if step < last:
            estimate.announce(estimate.step_seconds(model, data, device, loss_weights), last - step, config, device)
    net = model
    if ranks > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer, scheduler = optimizer_and_schedule(model, config)
    averaged = weight_average(model, config.ema, state)
    kept = model if averaged is None else averaged.module  # the weights validated and saved
    metric_name = TASKS[config.task].metric
    best = {"metric": None, "step": None}
    if state is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            best = state["best"]
            torch.set_rng_state(state["rng"]["torch"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{resume_from / ckpt.STATE}: does not fit this model ({e})") from None
    best = dict(best) | {"name": metric_name}
    per_step = config.batch_size * config.grad_accum
    sampler.load_state_dict({"seed": config.seed, "epoch": 0, "consumed": step * per_step * ranks})

    metrics_path = out / run_folder.METRICS
    head = data.head
    # the newest checkpoint on disk: an interrupt saves one unless it is this step's (a new run's step 0 too)
    saved = {"step": step if resume_from is not None else None, "at": time.monotonic()}

    def save(at_step: int, metric: float | None = None) -> Path:
        meta = {"step": at_step, "seed": config.seed, "head": head, "metric": metric,
                "train_config": dataclasses.asdict(config)}
        st = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "best": best,
              "rng": {"torch": torch.get_rng_state()}, "sampler": sampler.state_dict()}
        if averaged is not None:  # the checkpoint's weights are the average; resuming needs the trained ones too
            st["ema"] = {"trained_weights": model.state_dict(), "updates": int(averaged.n_averaged)}
        folder = ckpt.save_checkpoint(out, kept, meta, st)
        saved.update(step=at_step, at=time.monotonic())
        return folder

    augment = data.augment
    windows = iter(sampler)
    collate = collate_fn(train_ds)
    losses: dict[int, float] = {}
    started, n_tokens, n_bases = time.perf_counter(), 0, 0
    progress = Progress(last, step, config.task, config.progress and rank == 0)
    try:
        if rank == 0:
            out.mkdir(parents=True, exist_ok=True)
            run_folder.write_config(out, config)
            if resume_from is not None:
                run_folder.truncate_metrics(metrics_path, keep_until=step)
        with logging_redirect_tqdm() if progress.bar is not None else contextlib.nullcontext():
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
                                               **loss_weights)
                    (loss / config.grad_accum).backward()
                    total += float(loss.detach()) / config.grad_accum
                    n_tokens += int(batch["token_mask"].sum()) * ranks
                    n_bases += int(batch["valid"].sum()) * ranks
                total = distributed.mean(total, device)
                if not math.isfinite(total):
                    raise NumericalError(f"training loss is {total} at step {step + 1}",
                                         hint="lower --lr; the last good checkpoint is in " + str(out / "checkpoints"))
                with interrupt.deferred():  # the update, the step count and its log row: all or nothing
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    if averaged is not None:
                        averaged.update_parameters(model)
                    lr = scheduler.get_last_lr()[0]
                    scheduler.step()
                    step += 1
                    losses[step] = total
                    if rank == 0:
                        run_folder.append_metrics(metrics_path, [(step, "train", "loss", f"{total:.6g}"),
                                                                 (step, "train", "lr", f"{lr:.6g}")])
                elapsed = max(time.perf_counter() - started, 1e-9)
                progress.step(step, total, lr, n_tokens / elapsed, n_bases / elapsed)
                interrupt.raise_if_terminated()
                if rank != 0:
                    continue
                metric = None
                if val_ds is not None and (step % config.val_every == 0 or step == last):
                    val = validate(kept, config, val_ds, device, loss_weights)
                    run_folder.append_metrics(metrics_path, [(step, "val", name, f"{value:.6g}")
                                                             for name, value in val.items()])
                    metric = main_metric(config.task, val)
                    if is_better(config.task, metric, best["metric"]):
                        best |= {"metric": metric, "step": step}
                    log.info("validation at step %s: %s | best %s %s (step %s)", f"{step:,}",
                             ", ".join(f"{name} {value:.4g}" for name, value in val.items()), metric_name,
                             "-" if best["metric"] is None else f"{best['metric']:.4g}",
                             "-" if best["step"] is None else f"{best['step']:,}")
                    plots.draw(out, config.task, metric_name, best["step"])
                timed = config.ckpt_minutes and time.monotonic() - saved["at"] >= config.ckpt_minutes * 60
                if step % config.ckpt_every == 0 or step == last or metric is not None or timed:
                    folder = save(step, metric)
                    if metric is not None and best["step"] == step:
                        ckpt.set_pointer(out, ckpt.BEST, folder, metric)
                    ckpt.prune(out)
    except (KeyboardInterrupt, SystemExit) as stop:
        if isinstance(stop, SystemExit) and stop.code != interrupt.EXIT_CODE:
            raise
        progress.close()
        if rank == 0:
            if saved["step"] != step:
                with interrupt.deferred():  # a second Ctrl-C does not cut the checkpoint short
                    save(step)
            log.warning("interrupted at step %s of %s; the run is saved in %s (step %s): continue it with\n  %s",
                        f"{step:,}", f"{last:,}", out, f"{saved['step']:,}", resume_command(out))
        raise
    finally:
        progress.close()
    elapsed = time.perf_counter() - started
    summary = {"task": config.task, "step": step, "max_steps": config.max_steps, "device": str(device),
               "ranks": ranks, "final_loss": losses.get(step, run_folder.logged_loss(metrics_path, step)),
               "best": best, "checkpoint": str(ckpt.resolve(out)) if rank == 0 else None, "seconds": elapsed,
               "tokens_per_s": n_tokens / max(elapsed, 1e-9), "bases_per_s": n_bases / max(elapsed, 1e-9),
               "weights_sha256": hashlib.sha256(ckpt.weights_bytes(kept)).hexdigest(), "losses": losses}
    if rank == 0:
        run_folder.write_summary(out, summary)
        plots.draw(out, config.task, metric_name, best["step"])
    if created_group:
        distributed.close()
    return summary
