"""How long a training step will take, known before the run starts, and a warning when a CPU run would take
hours.

One forward and backward pass of a copy of the model on a slice of a training window (at most
CALIBRATION_TOKENS tokens, batch 1) is timed and scaled to the run's tokens, batch and accumulation:
linearly for LSH, local attention and the feed-forward, by the square for full attention. It leaves out
data loading and the memory effects of long windows, so it is said as "~": an estimate to choose
settings by, not a promise.
"""
from __future__ import annotations

import copy
import logging
import time

import torch

from genoformer.data.windows import Window
from genoformer.devices import autocast
from genoformer.tasks import TASKS
from genoformer.train.config import TrainConfig
from genoformer.train.data import TrainData, collate_fn
from genoformer.train.losses import forward_loss
from genoformer.train.progress import duration

log = logging.getLogger(__name__)

CALIBRATION_TOKENS = 1024
SLOW_HOURS = 1.0  # a CPU run estimated longer than this is warned about, naming the task's CPU recipe


def step_seconds(model: torch.nn.Module, data: TrainData, device: torch.device,
                 loss_weights: dict | None = None) -> float | None:
    """Estimated seconds per optimizer step of `data.config` (None for classify: its sequences set the length).

    Draws one window from `data.sampler` (reset it before training) and leaves the model and the RNGs as
    they were.
    """
    config = data.config
    if config.task == "classify":
        return None
    tokenizer = data.tokenizer
    first = next(iter(data.sampler))
    bases = min(config.window, CALIBRATION_TOKENS * tokenizer.stride)
    item = data.train[Window(first.contig, first.start, first.start + bases, min(first.n_valid, bases))]
    batch = collate_fn(data.train)([item])
    scale = tokenizer.n_tokens(config.window) / tokenizer.n_tokens(bases)
    if "full" in model.encoder.config.attention_kinds:
        scale *= scale
    probe = copy.deepcopy(model).to(device).train()
    best = float("inf")
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        for _ in range(2):  # the first pass pays one-time set-up (allocations, thread pools): keep the faster
            started = time.perf_counter()
            with autocast(device):
                loss, _ = forward_loss(probe, config.task, batch, device, generator=torch.Generator().manual_seed(0),
                                       mask_fraction=config.mask_fraction, mask_span=config.mask_span,
                                       **(loss_weights or {}))
            loss.backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            best = min(best, time.perf_counter() - started)
    return best * scale * config.batch_size * config.grad_accum


def announce(seconds: float | None, steps: int, config: TrainConfig, device: torch.device) -> dict:
    """Log the estimate (and warn when a CPU run would take hours); returns it for summaries."""
    if seconds is None:
        return {}
    total = seconds * steps
    log.info("estimated time per step ~%s on %s: %s steps ~%s (validation not counted)", duration(seconds),
             device.type, f"{steps:,}", duration(total))
    if device.type == "cpu" and total > SLOW_HOURS * 3600:
        recipe = TASKS[config.task].cpu_recipe
        advice = (f"for a CPU, start from the recipe {recipe} (genoformer train --config {recipe} with your "
                  "inputs as flags)" if recipe else "for a CPU, give a smaller --window, --d-model or --depth")
        log.warning("this run would take ~%s on the CPU (~%s a step x %s steps: window %s, d-model %d, "
                    "depth %d); %s, or use a GPU", duration(total), duration(seconds), f"{steps:,}",
                    f"{config.window:,}", config.model.d_model, config.model.depth, advice)
    return {"seconds_per_step": seconds, "steps": steps, "seconds": total}
