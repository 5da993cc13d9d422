"""Task heads over the Reformer encoder: per-base predictions from k-mer tokens, read evidence on the way in.

Token i covers bases [i*stride, i*stride + k) (tokenize.py). Two ways back to bases:
- PerBaseDecoder (decoder.py, the default): token states laid out on bases, joined with the
  stem's per-base features, convolved;
- PerBaseHead (the ablation, and models from before the decoder): each token's output projected to
  k x classes, base b read from its owning token at offset b - owner*stride.
Per-base inputs reach the encoder the same two ways: the Stem (stem.py, the default) convolves
bases, soft-mask bit and read evidence and pools them onto the tokens; without it, EvidenceFusion
projects each token's k evidence vectors. Either is added to the token embeddings through a
forward hook on the encoder's embedding (Reformer.forward takes no extra input).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UsageError
from ..io.evidence import BASE_COLUMNS, PILEUP_FEATURES, Evidence
from ..tasks import PER_SEQUENCE, SIGMOID, SOFTMAX, TASKS, TOKEN_LOGITS
from ..tokenize import KmerTokenizer, ProteinTokenizer
from .composition import KmerComposition
from .config import ReformerConfig
from .decoder import PerBaseDecoder
from .layout import bases_of_tokens, owner_index
from .per_base import LEGACY, PerBaseConfig
from .reformer import Reformer
from .stem import Stem


class PerBaseHead(nn.Module):
    """hidden [B, T, d] -> logits [B, W, classes]: each token projected to k x classes, laid out on bases."""

    def __init__(self, d_model: int, tokenizer: KmerTokenizer | ProteinTokenizer, n_classes: int):
        super().__init__()
        self.tokenizer, self.n_classes = tokenizer, n_classes
        self.proj = nn.Linear(d_model, tokenizer.k * n_classes)

    def forward(self, hidden: Tensor, n_bases: int) -> Tensor:
        B, T, _ = hidden.shape
        per_token = self.proj(hidden).view(B, T, self.tokenizer.k, self.n_classes)
        owner, offset = owner_index(self.tokenizer, n_bases, hidden.device)
        return per_token[:, owner, offset]  # (B, W, C)


class SequenceHead(nn.Module):
    """hidden [B, T, d], token_mask [B, T] -> logits [B, classes]: the mean over real tokens, projected; with
    `composition_k`, plus the k-mer composition of the bases (composition.py)."""

    def __init__(self, d_model: int, n_classes: int, composition_k: int = 0):
        super().__init__()
        self.proj = nn.Linear(d_model, n_classes)
        self.composition = KmerComposition(composition_k, n_classes) if composition_k else None

    def forward(self, hidden: Tensor, token_mask: Tensor | None, bases: Tensor | None = None,
                valid: Tensor | None = None) -> Tensor:
        if token_mask is None:
            logits = self.proj(hidden.mean(1))
        else:
            weight = token_mask[..., None].to(hidden.dtype)
            logits = self.proj((hidden * weight).sum(1) / weight.sum(1).clamp_min(1))
        if self.composition is None:
            return logits
        if bases is None:
            raise ValueError("this head reads the k-mer composition of the bases; pass bases [B, W]")
        return logits + self.composition(bases, valid).to(logits.dtype)


class EvidenceFusion(nn.Module):
    """evidence [B, W, F] + tokens [B, T] -> [B, T, d]: each token's k evidence vectors, log1p-scaled,
    flattened, projected.

    With the reads' own layout (io.alignments.EVIDENCE_FEATURES) and DNA k-mers, each base also gets
    the fractions of its depth that agree and disagree with the reference base its token spells:
    the A/C/G/T counts alone leave the model to learn every k-mer's letters before an allele
    fraction means anything, which a small model in a few hundred steps does not.
    """

    def __init__(self, d_model: int, tokenizer: KmerTokenizer | ProteinTokenizer, n_features: int):
        super().__init__()
        self.tokenizer, self.n_features = tokenizer, n_features
        self.against_reference = isinstance(tokenizer, KmerTokenizer) and n_features >= len(PILEUP_FEATURES)
        if self.against_reference:
            letters = torch.from_numpy(tokenizer._build_letters().astype("int64"))  # [vocab, k] ASCII
            code = torch.full_like(letters, -1)
            for i, base in enumerate(b"ACGT"):
                code[letters == base] = i
            self.register_buffer("reference_base", code, persistent=False)  # -1: N, IUPAC, special tokens
        extra = 2 if self.against_reference else 0
        self.proj = nn.Linear(tokenizer.k * (n_features + extra), d_model)

    def forward(self, evidence: Tensor, tokens: Tensor) -> Tensor:
        evidence = evidence[..., :self.n_features]
        B, W, Fe = evidence.shape
        n_tokens = tokens.shape[1]
        idx = bases_of_tokens(self.tokenizer, n_tokens, evidence.device)  # (T, k)
        # bases past the window end (the last k-mer's padding) carry no reads: zero evidence
        padded = F.pad(evidence, (0, 0, 0, max(int(idx.max()) + 1 - W, 0))).clamp_min(0)[:, idx]  # (B, T, k, F)
        per_token = torch.log1p(padded)
        if self.against_reference:
            reference = self.reference_base[tokens]  # (B, T, k)
            counts = padded[..., list(BASE_COLUMNS)]
            depth = padded[..., Evidence.depth:Evidence.depth + 1].clamp_min(1)
            agree = counts.gather(-1, reference.clamp_min(0)[..., None]) * (reference >= 0)[..., None]
            fractions = torch.cat((agree, counts.sum(-1, keepdim=True) - agree), -1) / depth
            per_token = torch.cat((per_token, fractions.to(per_token.dtype)), -1)
        return self.proj(per_token.reshape(B, n_tokens, -1))


def mlm_letters(tokenizer: KmerTokenizer | ProteinTokenizer) -> int:
    """Letters a per-base mlm predicts: the alphabet but its last letter (N / X: unknown, never a target)."""
    return tokenizer.pad_code


class GenoModel(nn.Module):
    """The encoder plus one task head, with the per-base stem and decoder of `per_base`.

    The task's head kind (genoformer.tasks) sets the output: token logits [B, T, vocab] (mlm), or
    with the decoder letter logits [B, W, mlm_letters]; per-sequence logits [B, n_classes], pooled
    over the real tokens (classify); otherwise per-base logits [B, W, n_classes] (variant, pattern,
    classify_residues). `n_evidence`: the model reads the first n_evidence columns of
    io.evidence.EVIDENCE_FEATURES. `per_base` None: LEGACY (no stem; k x classes per token), as
    models saved before it.
    """

    def __init__(self, config: ReformerConfig, tokenizer: KmerTokenizer | ProteinTokenizer, task: str,
                 n_classes: int = 0, n_evidence: int = 0, per_base: PerBaseConfig | None = None):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}")
        per_base = LEGACY if per_base is None else per_base
        self.task, self.tokenizer, self.head_kind = task, tokenizer, TASKS[task].head
        self.per_base, self.n_evidence = per_base, n_evidence
        self.encoder = Reformer(config)
        d = config.d_model
        self.stem = Stem(tokenizer, d, per_base.stem_width, n_evidence, per_base.dropout,
                         per_base.evidence_scaling) if per_base.stem else None
        # without the stem, read evidence enters through the per-token fusion
        self.fusion = EvidenceFusion(d, tokenizer, n_evidence) if n_evidence and self.stem is None else None
        skip = per_base.stem_width if per_base.stem else 0
        if per_base.composition_k and (self.head_kind != PER_SEQUENCE or tokenizer.kind != "dna"):
            raise UsageError("composition-k adds the k-mer composition to a per-sequence head of DNA "
                             f"(classify of whole DNA sequences); this is a {task} model of {tokenizer.kind}")
        if self.head_kind == PER_SEQUENCE:
            self.head = SequenceHead(d, n_classes, per_base.composition_k)
        elif per_base.decoder:  # token logits become letters per base: the masked bases themselves
            n_out = mlm_letters(tokenizer) if self.head_kind == TOKEN_LOGITS else n_classes
            self.head = PerBaseDecoder(d, tokenizer, n_out, per_base.decoder_width, per_base.decoder_depth,
                                       skip, per_base.dropout)
        elif self.head_kind == TOKEN_LOGITS:
            self.head = nn.Linear(d, config.vocab_size)
        else:
            self.head = PerBaseHead(d, tokenizer, n_classes)
        self._extra: Tensor | None = None
        self.encoder.token_emb.register_forward_hook(self._add_extra)

    @property
    def per_base_output(self) -> bool:
        """Whether the output is per base [B, W, C]: all but per-sequence heads and token logits without decoder."""
        return self.head_kind != PER_SEQUENCE and (self.head_kind != TOKEN_LOGITS or self.per_base.decoder)

    def _add_extra(self, module: nn.Module, inputs, output: Tensor) -> Tensor | None:
        if self._extra is None:
            return None
        # the encoder pads tokens to its length multiple; its padding positions are masked out
        return output + F.pad(self._extra, (0, 0, 0, output.shape[1] - self._extra.shape[1])).to(output.dtype)

    @contextlib.contextmanager
    def _extra_embedding(self, extra: Tensor | None) -> Iterator[None]:
        self._extra = extra
        try:
            yield
        finally:
            self._extra = None

    def embedding_extra(self, tokens: Tensor, evidence: Tensor | None = None, bases: Tensor | None = None,
                        soft_mask: Tensor | None = None,
                        valid: Tensor | None = None) -> tuple[Tensor | None, Tensor | None]:
        """(what is added to the token embeddings [B, T, d], the stem's per-base features) or Nones."""
        if self.n_evidence and evidence is None:
            raise ValueError("this model reads read evidence; pass evidence [B, W, F]")
        if self.stem is not None:
            if bases is None:
                raise ValueError("this model's stem reads the bases; pass bases [B, W]")
            per_base, extra = self.stem(bases, soft_mask if self.per_base.soft_mask_input else None, evidence, valid)
            return extra[:, :tokens.shape[1]], per_base
        if self.fusion is not None:
            return self.fusion(evidence, tokens), None
        return None, None

    def forward(self, tokens: Tensor, token_mask: Tensor | None = None, evidence: Tensor | None = None,
                n_bases: int | None = None, bases: Tensor | None = None, soft_mask: Tensor | None = None,
                valid: Tensor | None = None) -> Tensor:
        """Logits (see the class docstring); per-base inputs [B, W]: bases (letter codes), soft_mask, valid
        (False at padding bases, which the stem and decoder read as nothing), evidence [B, W, F]."""
        extra, features = self.embedding_extra(tokens, evidence, bases, soft_mask, valid)
        with self._extra_embedding(extra):
            hidden = self.encoder(tokens, token_mask)
        if self.head_kind == PER_SEQUENCE:
            return self.head(hidden, token_mask, bases, valid)
        if not self.per_base_output:
            return self.head(hidden)
        if n_bases is None:
            raise ValueError("per-base heads need n_bases (the window size)")
        if isinstance(self.head, PerBaseDecoder):
            return self.head(hidden, n_bases, features, valid)
        return self.head(hidden, n_bases)

    def load_pretrained(self, pretrained: GenoModel) -> list[str]:
        """Copy the encoder, and the stem and decoder tensors that fit, from a (pre-trained) model; their names.
        The decoder's output layer (the task's classes) is never copied."""
        self.encoder.load_state_dict(pretrained.encoder.state_dict())
        ours, theirs = self.state_dict(), pretrained.state_dict()
        parts = ["stem."]
        if isinstance(self.head, PerBaseDecoder) and isinstance(pretrained.head, PerBaseDecoder):
            parts.append("head.")
        fits = {name: value for name, value in theirs.items() if name.startswith(tuple(parts))
                and not name.startswith("head.out.") and name in ours and ours[name].shape == value.shape}
        self.load_state_dict(fits, strict=False)
        return ["encoder", *sorted(fits)]


def batch_inputs(batch: dict, device: torch.device | str) -> dict:
    """GenoModel.forward's keyword arguments from a batch (WindowDataset items stacked, or
    SequenceDataset.collate): tokens, token_mask, valid, n_bases and, where the batch has them,
    evidence, bases and soft_mask, moved to `device`."""
    inputs = {"tokens": batch["tokens"].to(device), "token_mask": batch["token_mask"].to(device),
              "valid": batch["valid"].to(device), "n_bases": batch["valid"].shape[1]}
    return inputs | {key: batch[key].to(device) for key in ("evidence", "bases", "soft_mask") if key in batch}


def activate(task: str, logits: Tensor) -> Tensor:
    """Class probabilities from a head's logits, with the task's activation (genoformer.tasks): a softmax
    over the classes or independent sigmoids, as the task was trained."""
    activation = TASKS[task].activation
    if activation == SOFTMAX:
        return logits.softmax(-1)
    if activation == SIGMOID:
        return logits.sigmoid()
    raise ValueError(f"a {task} model's output has no class probabilities")
