"""Bases and tokens: which token owns each base, and which bases each token covers.

Token i covers bases [i*stride, i*stride + k) (tokenize.py); token 0 owns its k bases and each
later token its last `stride`, so every base has exactly one owner, for any k and stride <= k.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..tokenize import KmerTokenizer, ProteinTokenizer


def owner_index(tokenizer: KmerTokenizer | ProteinTokenizer, n_bases: int, device=None) -> tuple[Tensor, Tensor]:
    """(token, offset) int64 [n_bases]: the token that owns each base and the base's place in that k-mer."""
    owner = torch.from_numpy(tokenizer.token_of_base(n_bases)).to(device)
    return owner, torch.arange(n_bases, device=device) - owner * tokenizer.stride


def bases_of_tokens(tokenizer: KmerTokenizer | ProteinTokenizer, n_tokens: int, device=None) -> Tensor:
    """int64 [n_tokens, k]: the base index of each token's k positions (may run past the window end)."""
    starts, _ = tokenizer.token_spans(n_tokens)
    return torch.from_numpy(starts).to(device)[:, None] + torch.arange(tokenizer.k, device=device)


def covering_tokens(bases: Tensor, n_tokens: int, tokenizer: KmerTokenizer | ProteinTokenizer) -> Tensor:
    """bool [B, n_tokens]: the tokens that spell any of the bases marked in `bases` bool [B, W]."""
    covered = bases_of_tokens(tokenizer, n_tokens, bases.device)  # (T, k), may run past W
    padded = F.pad(bases, (0, max(int(covered.max()) + 1 - bases.shape[1], 0)))
    return padded[:, covered].any(-1)


def spelled_bases(masked: Tensor, valid: Tensor, tokenizer: KmerTokenizer | ProteinTokenizer) -> Tensor:
    """bool [B, W]: the real bases that the masked tokens [B, T] spell (all k of each)."""
    B, W = valid.shape
    covered = bases_of_tokens(tokenizer, masked.shape[1], masked.device)  # (T, k), may run past W
    hits = torch.zeros(B, max(W, int(covered.max()) + 1), dtype=torch.int64, device=masked.device)
    hits.index_add_(1, covered.flatten(), masked.repeat_interleave(tokenizer.k, dim=1).long())
    return (hits[:, :W] > 0) & valid
