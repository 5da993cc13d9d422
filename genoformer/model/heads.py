"""Task heads over the Reformer encoder: per-base predictions from k-mer tokens, read-evidence fusion.

Token i covers bases [i*stride, i*stride + k) (tokenize.py). A per-base head projects each token's
output to k x classes and reads base b from its owning token (token_of_base), at offset
b - owner*stride, so with stride < k every base still gets exactly one prediction.
Read evidence enters the other way: the k bases' evidence vectors of each token, log1p-scaled
(depths and qualities span orders of magnitude), are projected to d_model and added to the token
embeddings, through a forward hook on the encoder's embedding (Reformer.forward takes no extra input).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..tasks import PER_SEQUENCE, TASKS, TOKEN_LOGITS
from ..tokenize import KmerTokenizer, ProteinTokenizer
from .config import ReformerConfig
from .reformer import Reformer


def owner_index(tokenizer: KmerTokenizer | ProteinTokenizer, n_bases: int, device=None) -> tuple[Tensor, Tensor]:
    """(token, offset) int64 [n_bases]: the token that owns each base and the base's place in that k-mer."""
    owner = torch.from_numpy(tokenizer.token_of_base(n_bases)).to(device)
    return owner, torch.arange(n_bases, device=device) - owner * tokenizer.stride


def bases_of_tokens(tokenizer: KmerTokenizer | ProteinTokenizer, n_tokens: int, device=None) -> Tensor:
    """int64 [n_tokens, k]: the base index of each token's k positions (may run past the window end)."""
    starts, _ = tokenizer.token_spans(n_tokens)
    return torch.from_numpy(starts).to(device)[:, None] + torch.arange(tokenizer.k, device=device)


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
    """hidden [B, T, d], token_mask [B, T] -> logits [B, classes]: the mean over real tokens, projected."""

    def __init__(self, d_model: int, n_classes: int):
        super().__init__()
        self.proj = nn.Linear(d_model, n_classes)

    def forward(self, hidden: Tensor, token_mask: Tensor | None) -> Tensor:
        if token_mask is None:
            return self.proj(hidden.mean(1))
        weight = token_mask[..., None].to(hidden.dtype)
        return self.proj((hidden * weight).sum(1) / weight.sum(1).clamp_min(1))


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
        from ..io.alignments import EVIDENCE_FEATURES

        self.tokenizer, self.n_features = tokenizer, n_features
        self.against_reference = isinstance(tokenizer, KmerTokenizer) and n_features == len(EVIDENCE_FEATURES)
        if self.against_reference:
            letters = torch.from_numpy(tokenizer._build_letters().astype("int64"))  # [vocab, k] ASCII
            code = torch.full_like(letters, -1)
            for i, base in enumerate(b"ACGT"):
                code[letters == base] = i
            self.register_buffer("reference_base", code, persistent=False)  # -1: N, IUPAC, special tokens
        extra = 2 if self.against_reference else 0
        self.proj = nn.Linear(tokenizer.k * (n_features + extra), d_model)

    def forward(self, evidence: Tensor, tokens: Tensor) -> Tensor:
        B, W, Fe = evidence.shape
        n_tokens = tokens.shape[1]
        idx = bases_of_tokens(self.tokenizer, n_tokens, evidence.device)  # (T, k)
        # bases past the window end (the last k-mer's padding) carry no reads: zero evidence
        padded = F.pad(evidence, (0, 0, 0, max(int(idx.max()) + 1 - W, 0))).clamp_min(0)[:, idx]  # (B, T, k, F)
        per_token = torch.log1p(padded)
        if self.against_reference:
            reference = self.reference_base[tokens]  # (B, T, k)
            counts, depth = padded[..., 1:5], padded[..., :1].clamp_min(1)
            agree = counts.gather(-1, reference.clamp_min(0)[..., None]) * (reference >= 0)[..., None]
            fractions = torch.cat((agree, counts.sum(-1, keepdim=True) - agree), -1) / depth
            per_token = torch.cat((per_token, fractions.to(per_token.dtype)), -1)
        return self.proj(per_token.reshape(B, n_tokens, -1))


class GenoModel(nn.Module):
    """The encoder plus one task head (and evidence fusion when read evidence is used).

    The task's head kind (genoformer.tasks) sets the output: token logits [B, T, vocab] (mlm);
    per-sequence logits [B, n_classes], pooled over the real tokens (classify); otherwise per-base
    logits [B, W, n_classes] (variant, pattern, classify_residues).
    """

    def __init__(self, config: ReformerConfig, tokenizer: KmerTokenizer | ProteinTokenizer, task: str,
                 n_classes: int = 0, n_evidence: int = 0):
        super().__init__()
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}")
        self.task, self.tokenizer, self.head_kind = task, tokenizer, TASKS[task].head
        self.encoder = Reformer(config)
        d = config.d_model
        if self.head_kind == TOKEN_LOGITS:
            self.head = nn.Linear(d, config.vocab_size)
        elif self.head_kind == PER_SEQUENCE:
            self.head = SequenceHead(d, n_classes)
        else:
            self.head = PerBaseHead(d, tokenizer, n_classes)
        self.fusion = EvidenceFusion(d, tokenizer, n_evidence) if n_evidence else None
        self._extra: Tensor | None = None
        self.encoder.token_emb.register_forward_hook(self._add_extra)

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

    def forward(self, tokens: Tensor, token_mask: Tensor | None = None, evidence: Tensor | None = None,
                n_bases: int | None = None) -> Tensor:
        extra = None
        if self.fusion is not None:
            if evidence is None:
                raise ValueError("this model fuses read evidence; pass evidence [B, W, F]")
            extra = self.fusion(evidence, tokens)
        with self._extra_embedding(extra):
            hidden = self.encoder(tokens, token_mask)
        if self.head_kind == TOKEN_LOGITS:
            return self.head(hidden)
        if self.head_kind == PER_SEQUENCE:
            return self.head(hidden, token_mask)
        if n_bases is None:
            raise ValueError("per-base heads need n_bases (the window size)")
        return self.head(hidden, n_bases)
