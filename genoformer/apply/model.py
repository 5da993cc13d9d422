"""The one place genoformer.apply runs a trained model: load it, say what it is, run batches of sequences.

Everything else in apply/ hands this module plain sequences (uint8 ASCII arrays) and gets numpy
probabilities back, so a change to how GenoModel is called (an extra per-base input, a new head)
is made here only: `_logits` is the single call of the model.

Output activations follow the training losses (train/tasks.py): cross-entropy heads (variant,
classify, classify_residues) give a softmax over their classes, the pattern head's BCE gives
independent sigmoids; mlm gives log-probabilities over the token vocabulary.
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from genoformer.errors import NumericalError, OutputError, UsageError
from genoformer.tokenize import MASK_ID, KmerTokenizer

PER_BASE_TASKS = ("variant", "pattern", "classify_residues")
_SOFTMAX_TASKS = ("variant", "classify", "classify_residues")


def activate(task: str, logits: Tensor) -> Tensor:
    """Class probabilities from a head's logits (softmax or sigmoid, as the task was trained)."""
    return logits.softmax(-1) if task in _SOFTMAX_TASKS else logits.sigmoid()


def resolve_device(name: str) -> torch.device:
    if name not in ("auto", "cpu", "cuda"):
        raise UsageError(f"device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device cuda requested but no CUDA GPU is available", hint="use --device cpu or auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class AppliedModel:
    """A loaded checkpoint in eval mode on `device`, with LSH rotations fixed by `hash_seed`."""

    model: torch.nn.Module
    meta: dict
    path: str
    device: torch.device
    hash_seed: int

    @property
    def task(self) -> str:
        return self.meta["task"]

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in self.meta["head"].get("class_names") or []]

    @property
    def window(self) -> int | None:
        """The training window in bases (for classify: the longest sequence it accepted)."""
        value = (self.meta.get("train_config") or {}).get("window")
        return int(value) if value else None

    @property
    def uses_reads(self) -> bool:
        return int(self.meta["head"].get("n_evidence", 0)) > 0

    @property
    def per_base(self) -> bool:
        return self.task in PER_BASE_TASKS

    @property
    def sha256(self) -> str:
        return self.meta["weights_sha256"]

    @property
    def length_multiple(self) -> int:
        """Tokens the encoder pads to internally: inputs of equal padded length run exactly as alone."""
        return int(getattr(self.model.encoder, "length_multiple", 1))

    def describe(self) -> str:
        """JSON of what the model is (task, architecture, tokenizer, head), for output provenance."""
        return json.dumps({"task": self.task, "model_config": self.meta["model_config"],
                           "tokenizer": self.meta["tokenizer"], "head": self.meta["head"]}, sort_keys=True)


def load_model(path: str, device: str = "auto", hash_seed: int = 0) -> AppliedModel:
    from genoformer.model.checkpoint import load_checkpoint

    model, meta, _ = load_checkpoint(path)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    model.encoder.set_hash_seed(hash_seed)
    return AppliedModel(model, meta, str(path), dev, hash_seed)


def local_reach(am: AppliedModel) -> tuple[int, int] | None:
    """(block, depth) when every layer attends within blocks of `block` tokens (own block and the previous
    one): a change at token t then alters only the outputs of blocks block(t) .. block(t) + depth, and
    those depend only on blocks block(t) - depth .. block(t) + depth. None for LSH or full attention.

    Assumes nothing but attention mixes positions (embedding, feed-forward, norms and head act per
    token): a layer that mixes them otherwise (a convolution over bases) must widen this, or make it None.
    """
    config = am.model.encoder.config
    if any(kind != "local" for kind in config.attention_kinds):
        return None
    return config.window_size, config.depth


def refuse_reads(am: AppliedModel, command: str) -> None:
    """UsageError for models that fuse read evidence: a hypothetical sequence has no reads."""
    if am.uses_reads:
        raise UsageError(f"{am.path}: this {am.task} model reads aligned reads (it was trained with --bam); "
                         f"{command} changes the sequence, and no reads exist for the changed sequence",
                         hint="use a model trained without reads (pattern, classify or mlm)")


# ---------------------------------------------------------------------------------------------


def encode(tokenizer, seqs: Sequence[np.ndarray], n_bases: int) -> tuple[Tensor, Tensor]:
    """tokens int64 [B, n_tokens(n_bases)] of each sequence (at most n_bases long), [PAD] after; token_mask."""
    T = tokenizer.n_tokens(n_bases)
    tokens = np.full((len(seqs), T), tokenizer.pad_id, dtype=np.int64)
    for b, seq in enumerate(seqs):
        ids = tokenizer.encode(seq)
        tokens[b, :ids.size] = ids
    tokens = torch.from_numpy(tokens)
    return tokens, tokens != tokenizer.pad_id


def _logits(am: AppliedModel, tokens: Tensor, mask: Tensor, n_bases: int) -> Tensor:
    """The model's raw output for a batch: [B, n_bases, C] per base, [B, C] per sequence, [B, T, V] mlm."""
    dev = am.device
    try:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=dev.type == "cuda"):
            return am.model(tokens.to(dev), mask.to(dev), None, n_bases=n_bases).float()
    except torch.cuda.OutOfMemoryError:
        raise OutputError(f"GPU out of memory on a batch of {len(tokens)} sequences of {n_bases:,} bases",
                          hint="reduce --batch-size") from None


def _finite(values: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(values).all():
        raise NumericalError(f"non-finite model output on {what}",
                             hint="the model or its inputs are broken; nothing was written")
    return values


def probabilities(am: AppliedModel, seqs: Sequence[np.ndarray], n_bases: int, what: str = "a batch") -> np.ndarray:
    """float32 class probabilities: [B, n_bases, C] for per-base models, [B, C] for classify models."""
    tokens, mask = encode(am.tokenizer, seqs, n_bases)
    with torch.inference_mode():
        probs = activate(am.task, _logits(am, tokens, mask, n_bases)).cpu().numpy()
    return _finite(probs, what)


def masked_log_probs(am: AppliedModel, seqs: Sequence[np.ndarray], n_bases: int, masked: np.ndarray,
                     ids: np.ndarray) -> np.ndarray:
    """mlm: float32 [B, T, K] log-probabilities of the candidate token ids `ids` [B, T, K] at each token,
    with the tokens `masked` [B, T] replaced by [MASK]."""
    tokens, mask = encode(am.tokenizer, seqs, n_bases)
    inputs = tokens.masked_fill(torch.from_numpy(masked) & mask, MASK_ID)
    with torch.inference_mode():
        log_probs = _logits(am, inputs, mask, n_bases).log_softmax(-1)
        picked = log_probs.gather(-1, torch.from_numpy(ids).to(log_probs.device)).cpu().numpy()
    return _finite(picked, "masked tokens")


@contextlib.contextmanager
def _embedding_leaf(am: AppliedModel) -> Iterator[list[Tensor]]:
    """Within the block, each forward's token embeddings [B, T, d] are a leaf tensor we can differentiate by."""
    captured: list[Tensor] = []

    def hook(module, inputs, output):
        leaf = output.detach().requires_grad_()
        captured.append(leaf)
        return leaf

    handle = am.model.encoder.token_emb.register_forward_hook(hook)
    flags = [p.requires_grad for p in am.model.parameters()]
    for p in am.model.parameters():
        p.requires_grad_(False)
    try:
        yield captured
    finally:
        handle.remove()
        for p, flag in zip(am.model.parameters(), flags):
            p.requires_grad_(flag)


def embedding_gradients(am: AppliedModel, seqs: Sequence[np.ndarray], n_bases: int,
                        weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(d f_c / d embedding float32 [C, B, T, d], token ids [B, T]) for f_c = sum of weights[b, ., c] * p_c.

    weights: [B, n_bases, C] for per-base models (which bases count), [B, C] for classify models.
    """
    tokens, mask = encode(am.tokenizer, seqs, n_bases)
    w = torch.from_numpy(np.asarray(weights, dtype=np.float32)).to(am.device)
    grads = []
    with _embedding_leaf(am) as captured, torch.enable_grad():
        # one forward per class: the reversible layers' backward consumes state kept by its forward
        for c in range(w.shape[-1]):
            probs = activate(am.task, _logits(am, tokens, mask, n_bases))
            grads.append(torch.autograd.grad((probs[..., c] * w[..., c]).sum(), captured[-1])[0])
    out = torch.stack(grads).float().cpu().numpy()
    return _finite(out, "embedding gradients"), tokens.numpy()


def embedding_table(am: AppliedModel) -> np.ndarray:
    """float32 [V, d]: the token embedding of each vocabulary id."""
    return am.model.encoder.token_emb.weight.detach().float().cpu().numpy()


def check_dna(am: AppliedModel, command: str) -> None:
    if not isinstance(am.tokenizer, KmerTokenizer):
        raise UsageError(f"{am.path}: this model reads {am.tokenizer.kind}; {command} works on DNA models",
                         hint="give a model trained on DNA")
