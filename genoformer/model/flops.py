"""Matrix-product FLOPs of a forward pass, from the architecture: the numerator of model FLOPs utilisation (MFU).

Counted as torch.utils.flop_counter.FlopCounterMode counts them, so that the two can be held to each
other (tests/model/test_flops.py): 2 * m * n * k per matrix product, and 2 * in_channels *
out_channels * kernel per output position of a convolution.  Elementwise work (norms, softmax,
rotary, GELU, sorting, the embedding lookup) is not counted, as in the usual MFU (PaLM, Chowdhery et
al. 2022, appendix B), and causal masks are not discounted.  A training step's model FLOPs are
TRAIN_STEP_FACTOR times the forward pass's (backward: twice the forward's products); what the
reversible stack and the LSH kernel compute again in backward is not model work and is not counted.

The encoder works on tokens padded to its length multiple (Reformer._embed).  Per layer:
- projections: q/k shared, v and out for LSH (3 d x d), q, k, v and out for local and full (4);
- attention: LSH scores and mixes each round's chunks of bucket_size queries against their window of
  2 * bucket_size keys; local each block of window_size against 2 * window_size; full all T x T;
- hashing (LSH): each round's projection onto n / 2 random directions per bucket factor, with the bucket
  counts of the real length (lsh_hashing.bucket_factors) over the padded one;
- feed-forward: expand to ff_mult * d and contract.
"""
from __future__ import annotations

from torch import nn

from .config import ReformerConfig
from .decoder import PerBaseDecoder
from .heads import GenoModel, PerBaseHead, SequenceHead
from .lsh_hashing import bucket_factors

TRAIN_STEP_FACTOR = 3  # forward + backward (twice the forward's matrix products)


def encoder_flops(config: ReformerConfig, n_tokens: int, batch: int = 1) -> dict[str, int]:
    """Forward FLOPs by part (projections, attention, hashing, feed_forward) of a Reformer encoder over `batch`
    sequences of n_tokens real tokens each."""
    multiple = config.length_multiple
    T = -(-n_tokens // multiple) * multiple
    d, H, dh = config.d_model, config.heads, config.dim_head
    parts = dict.fromkeys(("projections", "attention", "hashing", "feed_forward"), 0)
    for kind in config.attention_kinds:
        if kind == "lsh":
            bs, R = config.bucket_size, config.n_hashes
            parts["projections"] += 3 * 2 * T * d * d
            parts["attention"] += R * H * 2 * (2 * T * 2 * bs * dh)  # scores and mix over 2 * bs keys
            parts["hashing"] += R * H * sum(2 * T * dh * (n // 2) for n in bucket_factors(n_tokens, bs))
        else:
            keys = 2 * config.window_size if kind == "local" else T
            parts["projections"] += 4 * 2 * T * d * d
            parts["attention"] += H * 2 * (2 * T * keys * dh)
        parts["feed_forward"] += 2 * (2 * T * d * config.ff_mult * d)
    return {name: batch * flops for name, flops in parts.items()}


def model_flops(model: GenoModel, n_bases: int, batch: int = 1) -> dict[str, int]:
    """Forward FLOPs by part of a GenoModel over `batch` windows (or sequences) of n_bases bases: the encoder's
    parts (encoder_flops) plus `stem` (or `fusion`) and `head`, counted from their layers' shapes."""
    n_tokens = model.tokenizer.n_tokens(n_bases)
    parts = encoder_flops(model.encoder.config, n_tokens, batch)
    W = batch * n_bases
    if model.stem is not None:
        stem = model.stem
        inputs = [stem.sequence_in] + ([stem.evidence_in] if stem.evidence_in is not None else [])
        parts["stem"] = (sum(conv_flops(c, W) for c in inputs + [b.conv for b in stem.blocks])
                         + conv_flops(stem.to_tokens, batch * n_tokens))
    if model.fusion is not None:
        parts["fusion"] = linear_flops(model.fusion.proj, batch * n_tokens)
    head = model.head
    if isinstance(head, PerBaseDecoder):
        parts["head"] = (linear_flops(head.up, batch * n_tokens) + sum(conv_flops(b.conv, W) for b in head.blocks)
                         + (linear_flops(head.skip, W) if head.skip is not None else 0) + linear_flops(head.out, W))
    elif isinstance(head, PerBaseHead):  # k x classes per token
        parts["head"] = linear_flops(head.proj, batch * n_tokens)
    elif isinstance(head, SequenceHead):  # one pooled vector per sequence
        parts["head"] = linear_flops(head.proj, batch)
    else:  # token logits: nn.Linear
        parts["head"] = linear_flops(head, batch * n_tokens)
    return parts


def train_step_flops(model: GenoModel, n_bases: int, batch: int = 1) -> int:
    """Model FLOPs of one training step (forward and backward) over `batch` windows of n_bases bases."""
    return TRAIN_STEP_FACTOR * sum(model_flops(model, n_bases, batch).values())


def linear_flops(linear: nn.Linear, rows: int) -> int:
    return 2 * rows * linear.in_features * linear.out_features


def conv_flops(conv: nn.Conv1d, outputs: int) -> int:
    """FLOPs of conv computing `outputs` output positions (over all sequences)."""
    return 2 * outputs * conv.in_channels * conv.out_channels * conv.kernel_size[0]
