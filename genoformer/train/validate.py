"""Validation: the loss and metrics of the model on the validation set, and whether they beat the best so far.

Every validation draws the same mlm masks (a generator seeded by the run's seed), so its numbers
compare across steps and are reproduced from a checkpoint alone.
"""
from __future__ import annotations

import math

import torch

from genoformer.data.datasets import SequenceDataset, WindowDataset
from genoformer.devices import autocast
from genoformer.interrupt import raise_if_terminated
from genoformer.tasks import TASKS
from genoformer.train.config import TrainConfig
from genoformer.train.data import collate_fn
from genoformer.train.losses import forward_loss
from genoformer.train.metrics import metrics


def validate(model, config: TrainConfig, val_ds: WindowDataset | SequenceDataset, device: torch.device,
             loss_weights: dict) -> dict[str, float]:
    """{"loss": mean batch loss} and the task's metrics over `val_ds`; the model is back in train mode after.
    `loss_weights`: forward_loss's weighting arguments (class_weights, candidate weights)."""
    model.eval()
    gen = torch.Generator().manual_seed(config.seed)
    outputs, losses = [], []
    collate = collate_fn(val_ds)
    with torch.no_grad(), autocast(device):
        for i in range(0, len(val_ds), config.batch_size):
            raise_if_terminated()
            batch = collate([val_ds[j] for j in range(i, min(i + config.batch_size, len(val_ds)))])
            loss, out = forward_loss(model, config.task, batch, device, generator=gen,
                                     mask_fraction=config.mask_fraction, mask_span=config.mask_span,
                                     **loss_weights)
            losses.append(float(loss))
            outputs.append(out)
    model.train()
    return {"loss": sum(losses) / len(losses)} | metrics(config.task, outputs)


def main_metric(task: str, scores: dict[str, float]) -> float:
    """The score that picks the best checkpoint (tasks.py)."""
    return scores[TASKS[task].metric]


def is_better(task: str, metric: float | None, best: float | None) -> bool:
    """Whether `metric` beats `best` (None: nothing yet) in the task's direction; NaN never does."""
    if metric is None or math.isnan(metric):
        return False
    return best is None or (metric > best if TASKS[task].higher_is_better else metric < best)
