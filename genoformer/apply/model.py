"""The one place genoformer.apply runs a trained model: load it, say what it is, run batches of sequences.

Everything else in apply/ hands this module plain sequences (uint8 ASCII arrays) and gets numpy
probabilities back, so a change to how GenoModel is called (an extra per-base input, a new head)
is made here only: `_logits` is the single call of the model, with the inputs `encode` builds from
the sequences as the training data does (tokens; for the per-base stem the letter codes, the
soft-mask bit of lower-case letters and the valid bases).

Output activations are the task registry's (genoformer.tasks, through model.heads.activate): a
softmax for variant, classify and classify_residues, independent sigmoids for pattern. mlm models
give log-probabilities: of the four letters at each masked base (per-base mlm, the default since
the per-base decoder), or of the token vocabulary at each masked token (token-level checkpoints).
"""
from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from genoformer.devices import autocast, resolve_device
from genoformer.errors import NumericalError, OutputError, UsageError
from genoformer.model.decoder import PerBaseDecoder
from genoformer.model.heads import activate, batch_inputs
from genoformer.model.layout import covering_tokens, spelled_bases
from genoformer.model.stem import BLOCK_KERNEL, RADIUS
from genoformer.tasks import TASKS
from genoformer.tokenize import MASK_ID, KmerTokenizer, soft_mask


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
        """Whether the model's classes are per base (pattern, variant, classify_residues)."""
        return TASKS[self.task].per_base

    @property
    def labels_sequences(self) -> bool:
        """Whether it was trained on labelled sequences (classify, per sequence or per residue)."""
        return "sequences" in TASKS[self.task].inputs

    @property
    def letters_mlm(self) -> bool:
        """An mlm that predicts the masked bases' letters (the per-base decoder) rather than k-mer tokens."""
        return self.task == "mlm" and self.model.per_base_output

    @property
    def sha256(self) -> str:
        return self.meta["weights_sha256"]

    @property
    def length_multiple(self) -> int:
        """Tokens the encoder pads to internally: inputs of equal padded length run exactly as alone."""
        return int(getattr(self.model.encoder, "length_multiple", 1))

    def describe(self) -> str:
        """JSON of what the model is (task, architecture, per-base parts, tokenizer, head), for provenance."""
        return json.dumps({"task": self.task, "model_config": self.meta["model_config"],
                           "per_base": self.meta.get("per_base"), "tokenizer": self.meta["tokenizer"],
                           "head": self.meta["head"]}, sort_keys=True)


def load_model(path: str, device: str = "auto", hash_seed: int = 0) -> AppliedModel:
    from genoformer.model.checkpoint import load_checkpoint

    dev = resolve_device(device)
    model, meta, _ = load_checkpoint(path, hash_seed=hash_seed)
    return AppliedModel(model.to(dev).eval(), meta, str(path), dev, hash_seed)


@dataclass(frozen=True)
class Reach:
    """How far a change spreads in a model whose every layer is local attention (see local_reach)."""
    block: int  # tokens per attention block: each block attends to itself and the previous one
    depth: int  # attention layers
    stem: int  # bases on each side that the stem reads into a base's features (0: no stem)
    decoder: int  # bases on each side that the decoder's convolutions mix into a base's output (0: none)


def local_reach(am: AppliedModel) -> Reach | None:
    """The Reach of a model with only local attention; None for LSH or full attention.

    With blocks of `block` tokens, a change of the token inputs in block b alters only the outputs of
    blocks b .. b + depth, and those depend only on blocks b - depth .. b + depth. The stem widens what a
    changed base alters on the way in (every token spelling a base within RADIUS of it), the decoder's
    residual convolutions on the way out (BLOCK_KERNEL // 2 bases each). Nothing else mixes positions:
    embedding, feed-forward, norms and the head act per token or per base.
    """
    config = am.model.encoder.config
    if any(kind != "local" for kind in config.attention_kinds):
        return None
    head = am.model.head
    decoder = len(head.blocks) * (BLOCK_KERNEL // 2) if isinstance(head, PerBaseDecoder) else 0
    return Reach(config.window_size, config.depth, RADIUS if am.model.stem is not None else 0, decoder)


def refuse_reads(am: AppliedModel, command: str) -> None:
    """UsageError for models that fuse read evidence: a hypothetical sequence has no reads."""
    if am.uses_reads:
        raise UsageError(f"{am.path}: this {am.task} model reads aligned reads (it was trained with --bam); "
                         f"{command} changes the sequence, and no reads exist for the changed sequence",
                         hint="use a model trained without reads (pattern, classify or mlm)")


# ---------------------------------------------------------------------------------------------


def encode(tokenizer, seqs: Sequence[np.ndarray], n_bases: int) -> dict[str, Tensor]:
    """The model's inputs for sequences (each at most n_bases long), as WindowDataset items stacked:
    tokens int64 [B, n_tokens(n_bases)] ([PAD] after each sequence) and token_mask; per base [B, n_bases]:
    valid, bases (letter codes, tokenizer.codes; N or X at padding) and soft_mask (lower-case letters)."""
    T = tokenizer.n_tokens(n_bases)
    tokens = np.full((len(seqs), T), tokenizer.pad_id, dtype=np.int64)
    bases = np.full((len(seqs), n_bases), tokenizer.pad_code, dtype=np.int64)
    masked = np.zeros((len(seqs), n_bases), dtype=bool)
    valid = np.zeros((len(seqs), n_bases), dtype=bool)
    for b, seq in enumerate(seqs):
        codes = tokenizer.codes(seq)
        ids = tokenizer.encode_codes(codes)
        tokens[b, :ids.size] = ids
        bases[b, :len(seq)], masked[b, :len(seq)], valid[b, :len(seq)] = codes, soft_mask(seq), True
    batch = {"tokens": tokens, "token_mask": tokens != tokenizer.pad_id, "valid": valid, "bases": bases,
             "soft_mask": masked}
    return {key: torch.from_numpy(value) for key, value in batch.items()}


def _logits(am: AppliedModel, batch: dict[str, Tensor]) -> Tensor:
    """The model's raw output for a batch: [B, n_bases, C] per base, [B, C] per sequence, [B, T, V] token mlm."""
    try:
        with autocast(am.device):
            return am.model(**batch_inputs(batch, am.device)).float()
    except torch.cuda.OutOfMemoryError:
        n_bases = batch["valid"].shape[1]
        raise OutputError(f"GPU out of memory on a batch of {len(batch['tokens'])} sequences of {n_bases:,} bases",
                          hint="reduce --batch-size") from None


def _finite(values: np.ndarray, what: str) -> np.ndarray:
    if not np.isfinite(values).all():
        raise NumericalError(f"non-finite model output on {what}",
                             hint="the model or its inputs are broken; nothing was written")
    return values


def probabilities(am: AppliedModel, seqs: Sequence[np.ndarray], n_bases: int, what: str = "a batch") -> np.ndarray:
    """float32 class probabilities: [B, n_bases, C] for per-base models, [B, C] for classify models."""
    batch = encode(am.tokenizer, seqs, n_bases)
    with torch.inference_mode():
        probs = activate(am.task, _logits(am, batch)).cpu().numpy()
    return _finite(probs, what)


def masked_log_probs(am: AppliedModel, seqs: Sequence[np.ndarray], n_bases: int, masked: np.ndarray,
                     ids: np.ndarray) -> np.ndarray:
    """Token-level mlm: float32 [B, T, K] log-probabilities of the candidate token ids `ids` [B, T, K] at each
    token, with the tokens `masked` [B, T] replaced by [MASK] (and, for a stem, the bases they spell by N)."""
    batch = encode(am.tokenizer, seqs, n_bases)
    hidden = torch.from_numpy(masked) & batch["token_mask"]
    batch["tokens"] = batch["tokens"].masked_fill(hidden, MASK_ID)
    batch["bases"] = batch["bases"].masked_fill(spelled_bases(hidden, batch["valid"], am.tokenizer),
                                                am.tokenizer.pad_code)
    with torch.inference_mode():
        log_probs = _logits(am, batch).log_softmax(-1)
        picked = log_probs.gather(-1, torch.from_numpy(ids).to(log_probs.device)).cpu().numpy()
    return _finite(picked, "masked tokens")


def masked_letter_log_probs(am: AppliedModel, seqs: Sequence[np.ndarray], n_bases: int,
                            hidden: np.ndarray) -> np.ndarray:
    """Per-base mlm: float32 [B, n_bases, 4] log-probabilities of A, C, G, T at each base, with the bases
    `hidden` [B, n_bases] hidden as training hides them (train/losses.py): N to the stem, and every token
    spelling one of them [MASK]."""
    batch = encode(am.tokenizer, seqs, n_bases)
    bases = torch.from_numpy(hidden) & batch["valid"]
    tokens = covering_tokens(bases, batch["tokens"].shape[1], am.tokenizer) & batch["token_mask"]
    batch["tokens"] = batch["tokens"].masked_fill(tokens, MASK_ID)
    batch["bases"] = batch["bases"].masked_fill(bases, am.tokenizer.pad_code)
    with torch.inference_mode():
        log_probs = _logits(am, batch).log_softmax(-1).cpu().numpy()
    return _finite(log_probs, "masked bases")


@contextlib.contextmanager
def _input_leaves(am: AppliedModel) -> Iterator[tuple[list[Tensor], list[Tensor]]]:
    """Within the block, each forward's token embeddings [B, T, d] (before the stem's part is added) and the
    stem's input [1, letters + 1, W] per sequence (one-hot letters, soft-mask bit) are leaf tensors we can
    differentiate by."""
    embeddings: list[Tensor] = []
    stem_inputs: list[Tensor] = []

    def leaf(captured: list[Tensor], value: Tensor) -> Tensor:
        captured.append(value.detach().requires_grad_())
        return captured[-1]

    # prepend: the leaf is the embedding alone; GenoModel's own hook then adds the stem's part to it
    handles = [am.model.encoder.token_emb.register_forward_hook(lambda m, a, out: leaf(embeddings, out),
                                                                prepend=True)]
    if am.model.stem is not None:
        handles.append(am.model.stem.sequence_in.register_forward_pre_hook(
            lambda m, args: (leaf(stem_inputs, args[0]),)))
    flags = [p.requires_grad for p in am.model.parameters()]
    for p in am.model.parameters():
        p.requires_grad_(False)
    try:
        yield embeddings, stem_inputs
    finally:
        for handle in handles:
            handle.remove()
        for p, flag in zip(am.model.parameters(), flags):
            p.requires_grad_(flag)


def input_gradients(am: AppliedModel, seq: np.ndarray, n_bases: int,
                    weights: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Gradients of f_c = sum of weights[., c] * p_c for one sequence, per class c: by its token embeddings,
    float32 [C, T, d], and (a model with a stem) by the one-hot letters the stem reads, float32
    [C, n_bases, letters] (None without a stem).

    weights: [n_bases, C] for per-base models (which bases count), [C] for classify models.
    """
    batch = encode(am.tokenizer, [seq], n_bases)
    w = torch.from_numpy(np.asarray(weights, dtype=np.float32)).to(am.device)
    n_letters = len(am.tokenizer.alphabet)
    by_embedding, by_letter = [], []
    with _input_leaves(am) as (embeddings, stem_inputs), torch.enable_grad():
        # one forward per class: the reversible layers' backward consumes state kept by its forward
        for c in range(w.shape[-1]):
            embeddings.clear()
            stem_inputs.clear()
            probs = activate(am.task, _logits(am, batch))[0]
            leaves = embeddings[-1:] + stem_inputs
            grads = torch.autograd.grad((probs[..., c] * w[..., c]).sum(), leaves)
            by_embedding.append(grads[0][0])
            if stem_inputs:
                by_letter.append(grads[1][0, :n_letters].T)  # [n_bases, letters]
    embedding = _finite(torch.stack(by_embedding).float().cpu().numpy(), "embedding gradients")
    if not by_letter:
        return embedding, None
    return embedding, _finite(torch.stack(by_letter).float().cpu().numpy(), "stem input gradients")


def embedding_table(am: AppliedModel) -> np.ndarray:
    """float32 [V, d]: the token embedding of each vocabulary id."""
    return am.model.encoder.token_emb.weight.detach().float().cpu().numpy()


def check_dna(am: AppliedModel, command: str) -> None:
    if not isinstance(am.tokenizer, KmerTokenizer):
        raise UsageError(f"{am.path}: this model reads {am.tokenizer.kind}; {command} works on DNA models",
                         hint="give a model trained on DNA")
