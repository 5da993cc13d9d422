"""The training loss of each task (mlm, variant, pattern, classify) on one batch; metrics.py scores them.

mlm: contiguous spans of real tokens are masked. With the per-base decoder, their bases are the
  targets: each base is one of the letters (A C G T), the bases are hidden from the stem (as N) and
  every token covering one becomes [MASK]; cross-entropy per masked base, reported in bits per base
  as DNA language models publish it. Token-level models (no decoder): the masked tokens become
  [MASK] (and the bases they spell N, for a stem) and their k-mers are the targets.
variant: per-base class (io.variant_classes: hom_ref, or variant type x genotype, from the truth's
  genotype and variant_type labels); cross-entropy where labelled (-100 elsewhere: padding, outside
  the confident BED), optionally weighted per class (--class-weights),
  and, on candidate bases (reads showing another allele, `candidate_bases`), by --candidate-weight:
  nearly every base is hom_ref with no read against it, and those teach little once learnt, while
  the few bases where reads disagree hold every variant and every error that looks like one.
  With balanced class weights, a hom_ref candidate base weighs as a non-ref base (the classes' mean,
  train/data.py): it is as hard a decision as a variant. At hom_ref's weight (~1/7) the ~150 such
  bases of a simulated 500 kb contig weigh as ~20 bases against ~70,000 for each variant class, and
  the model calls nearly every artefact (docs/benchmarks.md).
pattern: per-base multi-label classes (tracks, or soft-masked repeats); BCE over real bases, optionally
  with each class's positive bases weighted (--class-weights balanced: a rare track's few bases count
  as much as all the others, so the model does not settle on "never").
classify: one class per sequence (pooled logits), or per residue (-100 at padding and masked
  residues); cross-entropy.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from genoformer.data.datasets import IGNORE_INDEX
from genoformer.io.evidence import Evidence
from genoformer.io.variant_classes import HOM_REF, variant_class
from genoformer.model.heads import batch_inputs, mlm_letters
from genoformer.model.layout import covering_tokens, spelled_bases
from genoformer.tokenize import MASK_ID

# a base is a candidate when at least this share of its reads show one other allele: about where
# pileup callers start to consider a site (DeepVariant 0.12 for SNVs), well above Illumina's error rate
CANDIDATE_FRACTION = 0.1


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
                 class_weights: Tensor | None = None, candidate_weight: float = 1.0,
                 reference_candidate_weight: float | None = None) -> tuple[Tensor, dict]:
    """(mean loss, tensors for metrics) of one batch; `generator` draws the mlm masks.

    variant: `class_weights` [7] weights each class's bases and `candidate_weight` the candidate
    bases (`candidate_bases`, read from the batch's evidence), and `reference_candidate_weight` replaces
    the hom_ref class weight at candidate bases; the mean is over the weights (cross_entropy's
    convention), so the loss scale does not depend on a batch's mix of bases.
    pattern: `class_weights` [classes] weights each class's positive bases (BCE's pos_weight); the mean is
    over bases and classes.
    """
    tokens, token_mask = batch["tokens"], batch["token_mask"]
    inputs = batch_inputs(batch, device)
    if task == "mlm":
        masked = span_mask(token_mask, mask_fraction, mask_span, generator)
        net = getattr(model, "module", model)  # DistributedDataParallel wraps the GenoModel
        if net.per_base_output:
            return _masked_bases_loss(model, net.tokenizer, batch, inputs, masked, device)
        inputs["tokens"] = tokens.masked_fill(masked, MASK_ID).to(device)
        if "bases" in batch:  # a stem reads the bases: those the masked k-mers spell are hidden from it too
            spelled = spelled_bases(masked, batch["valid"], net.tokenizer)
            inputs["bases"] = batch["bases"].masked_fill(spelled, net.tokenizer.pad_code).to(device)
        logits = model(**inputs)
        target = torch.where(masked, tokens, IGNORE_INDEX).to(device)
        loss = F.cross_entropy(logits.float().flatten(0, 1), target.flatten(), ignore_index=IGNORE_INDEX)
        return loss, {"logits": logits.detach(), "target": target}
    if task == "classify":
        logits = model(**inputs).float()
        target = batch["residue_labels" if "residue_labels" in batch else "label"].to(device)
        if not (target != IGNORE_INDEX).any():
            return logits.sum() * 0, {"logits": logits.detach(), "target": target}  # all residues masked
        loss = F.cross_entropy(logits.flatten(0, -2), target.flatten(), ignore_index=IGNORE_INDEX)
        return loss, {"logits": logits.detach(), "target": target}
    logits = model(**inputs).float()
    if task == "variant":
        target = torch.from_numpy(variant_class(batch["genotype"].numpy(), batch["variant_type"].numpy())).to(device)
        if not (target != IGNORE_INDEX).any():
            return logits.sum() * 0, {"logits": logits.detach(), "target": target}  # nothing scored here
        if candidate_weight == 1 and reference_candidate_weight is None:
            loss = F.cross_entropy(logits.flatten(0, 1), target.flatten(), weight=class_weights,
                                   ignore_index=IGNORE_INDEX)
            return loss, {"logits": logits.detach(), "target": target}
        scored = target != IGNORE_INDEX
        candidate = candidate_bases(batch["evidence"]).to(device)
        weight = torch.where(candidate, float(candidate_weight), 1.0)
        if class_weights is not None:
            weight = weight * class_weights[target.clamp_min(0)]
        if reference_candidate_weight is not None:
            weight = torch.where(candidate & (target == HOM_REF), candidate_weight * reference_candidate_weight, weight)
        weight = weight * scored
        per_base = F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=IGNORE_INDEX,
                                   reduction="none")
        loss = (per_base * weight.flatten()).sum() / weight.sum().clamp_min(1e-12)
        return loss, {"logits": logits.detach(), "target": target}
    target = (batch["tracks"] if "tracks" in batch else batch["soft_mask"][..., None].float()).to(device)
    valid = batch["valid"].to(device)
    loss = F.binary_cross_entropy_with_logits(logits[valid], target[valid], pos_weight=class_weights)
    return loss, {"logits": logits[valid].detach(), "target": target[valid]}


def candidate_bases(evidence: Tensor) -> Tensor:
    """bool [B, W] of read evidence [B, W, F] (io.evidence layout): at least CANDIDATE_FRACTION of the
    depth shows the best alternative base, a deletion or an insertion."""
    depth = evidence[..., Evidence.depth].clamp_min(1)
    indel = torch.maximum(evidence[..., Evidence.deletions], evidence[..., Evidence.insertions]) / depth
    return (evidence[..., Evidence.depth] > 0) & \
        (torch.maximum(evidence[..., Evidence.alt_fraction], indel) >= CANDIDATE_FRACTION)


def hidden_bases(masked: Tensor, valid: Tensor, tokenizer) -> tuple[Tensor, Tensor]:
    """(bases bool [B, W], tokens bool [B, T]) hidden for masked tokens [B, T]: the real bases the masked
    tokens own, and every token covering one of them (with stride < k, neighbours spell them too)."""
    B, W = valid.shape
    owner = torch.from_numpy(tokenizer.token_of_base(W))
    bases = masked[:, owner] & valid
    return bases, covering_tokens(bases, masked.shape[1], tokenizer)


def _masked_bases_loss(model, tokenizer, batch: dict, inputs: dict, masked: Tensor,
                       device: torch.device) -> tuple[Tensor, dict]:
    bases = batch["bases"]
    hidden, hidden_tokens = hidden_bases(masked, batch["valid"], tokenizer)
    inputs["tokens"] = batch["tokens"].masked_fill(hidden_tokens & batch["token_mask"], MASK_ID).to(device)
    inputs["bases"] = bases.masked_fill(hidden, tokenizer.pad_code).to(device)
    logits = model(**inputs).float()
    target = torch.where(hidden & (bases < mlm_letters(tokenizer)), bases, IGNORE_INDEX).to(device)
    out = {"logits": logits.detach(), "target": target, "per_base": True}
    if not (target != IGNORE_INDEX).any():
        return logits.sum() * 0, out  # only N under the mask
    return F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=IGNORE_INDEX), out
