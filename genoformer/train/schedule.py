"""The optimizer and its learning-rate schedule: AdamW, linear warm-up, then cosine decay to lr / 10."""
from __future__ import annotations

import math

import torch
from torch import nn

from genoformer.train.config import TrainConfig


def lr_factor(max_steps: int, warmup_steps: int | None):
    """step -> multiple of the peak lr: (step + 1) / (warmup + 1) while warming up, then cosine to 0.1.

    warmup_steps None: a tenth of max_steps.
    """
    warmup = max_steps // 10 if warmup_steps is None else warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(max_steps - warmup, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return factor


def optimizer_and_schedule(model: nn.Module, config: TrainConfig):
    """(AdamW, LambdaLR) for `model`: weight decay on matrices and embeddings, not on norms and biases."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config.max_steps, config.warmup_steps))
