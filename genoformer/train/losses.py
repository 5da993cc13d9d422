"""The training loss of each task (mlm, variant, pattern, classify) on one batch; metrics.py scores them.

mlm: contiguous spans of real tokens become [MASK]; cross-entropy on the masked tokens only.
variant: per-base genotype (hom_ref / het / hom_alt); cross-entropy where labelled (-100 elsewhere:
  padding, outside the confident BED), optionally weighted per genotype (--class-weights).
pattern: per-base multi-label classes (tracks, or soft-masked repeats); BCE over real bases.
classify: one class per sequence (pooled logits), or per residue (-100 at padding and masked
  residues); cross-entropy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from genoformer.data.datasets import IGNORE_INDEX
from genoformer.tokenize import MASK_ID


def span_mask(token_mask: Tensor, fraction: float, span: int, generator: torch.Generator) -> Tensor:
    """bool [B, T]: about `fraction` of each row's real tokens, in runs of `span`; at least one token."""
    B, T = token_mask.shape
    out = torch.zeros(B, T, dtype=torch.bool)
    for b in range(B):
        n_real = int(token_mask[b].sum())
        if n_real == 0:
            continue
        n_spans = max(1, round(fraction * n_real / span))
        starts = torch.randint(0, max(n_real - span + 1, 1), (n_spans,), generator=generator)
        cover = (starts[:, None] + torch.arange(span)).clamp_max(n_real - 1).flatten()
        out[b, cover] = True
    return out & token_mask.cpu()


def forward_loss(model, task: str, batch: dict, device: torch.device, *, generator: torch.Generator | None = None,
                 mask_fraction: float = 0.15, mask_span: int = 3,
                 class_weights: Tensor | None = None) -> tuple[Tensor, dict]:
    """(mean loss, tensors for metrics) of one batch; `generator` draws the mlm masks.

    variant: `class_weights` [3] weights each genotype's bases; the mean is over the weights
    (cross_entropy's convention), so the loss scale does not depend on a batch's mix of genotypes.
    """
    tokens, token_mask = batch["tokens"], batch["token_mask"]
    if task == "mlm":
        masked = span_mask(token_mask, mask_fraction, mask_span, generator)
        inputs = tokens.masked_fill(masked, MASK_ID).to(device)
        logits = model(inputs, token_mask.to(device))
        target = torch.where(masked, tokens, IGNORE_INDEX).to(device)
        loss = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), ignore_index=IGNORE_INDEX)
        return loss, {"logits": logits.detach(), "target": target}
    n_bases = batch["valid"].shape[1]
    if task == "classify":
        logits = model(tokens.to(device), token_mask.to(device), n_bases=n_bases).float()
        target = batch["residue_labels" if "residue_labels" in batch else "label"].to(device)
        if not (target != IGNORE_INDEX).any():
            return logits.sum() * 0, {"logits": logits.detach(), "target": target}  # all residues masked
        loss = F.cross_entropy(logits.flatten(0, -2), target.flatten(), ignore_index=IGNORE_INDEX)
        return loss, {"logits": logits.detach(), "target": target}
    evidence = batch["evidence"].to(device) if "evidence" in batch else None
    logits = model(tokens.to(device), token_mask.to(device), evidence, n_bases=n_bases).float()
    if task == "variant":
        target = batch["genotype"].to(device)
        if not (target != IGNORE_INDEX).any():
            return logits.sum() * 0, {"logits": logits.detach(), "target": target}  # nothing scored here
        loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), weight=class_weights,
                               ignore_index=IGNORE_INDEX)
        return loss, {"logits": logits.detach(), "target": target}
    target = (batch["tracks"] if "tracks" in batch else batch["soft_mask"][..., None].float()).to(device)
    valid = batch["valid"].to(device)
    loss = F.binary_cross_entropy_with_logits(logits[valid], target[valid])
    return loss, {"logits": logits[valid].detach(), "target": target[valid]}
