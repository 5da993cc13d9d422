"""Reformer encoder: token embedding -> reversible blocks of (attention, feed-forward) -> LayerNorm.

Positions are rotary (positions.py), computed per call from token indices: no table, so a
window of 1,048,576 tokens or more costs nothing extra and scores depend only on offsets.
Users pass any length; the sequence is padded inside to a multiple of 2 * bucket_size (LSH)
and window_size (local) with masked positions, and the padding is stripped from the output.
Mixed precision: run under torch.autocast (bf16 on GPU); masks use finite constants.

The blocks are the readable modules (lsh.py, attention.py, feedforward.py, reversible.py); the
Reformer runs them on genoformer.model.fast, the function they define in less memory and time at
long lengths: FastEngine runs its reversible stack, and its LSH layers are given the
memory-efficient kernel.  tests/model/fast holds every fast piece to the plain path.
"""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import InputError, UsageError
from .attention import FullAttention, LocalAttention
from .config import ReformerConfig
from .fast import FastEngine, chunk_attention
from .feedforward import FeedForward
from .lsh import LSHSelfAttention
from .lsh_inspect import LSHInspection, Queries, inspect, query_range
from .positions import Rotary, rotary_angles
from .prenorm import PreNorm
from .reversible import ReversibleBlock, ReversibleSequence, RngState


def make_attention(kind: str, config: ReformerConfig) -> nn.Module:
    common = dict(causal=config.causal, dropout=config.dropout)
    if kind == "full":
        return FullAttention(config.d_model, config.heads, **common)
    if kind == "local":
        return LocalAttention(config.d_model, config.heads, window_size=config.window_size, **common)
    return LSHSelfAttention(config.d_model, config.heads, bucket_size=config.bucket_size,
                            n_hashes=config.n_hashes, hash_seed=None, kernel=chunk_attention, **common)


class Reformer(nn.Module):
    """tokens int64 [B, T] (any T), mask bool [B, T] (True = real) -> hidden states [B, T, d_model]."""

    def __init__(self, config: ReformerConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.token_emb = nn.Embedding(config.vocab_size, d)
        blocks = []
        self.lsh_attention: dict[int, LSHSelfAttention] = {}  # by layer index; the modules live in self.layers
        for i, kind in enumerate(config.attention_kinds):
            attention = make_attention(kind, config)
            blocks.append(ReversibleBlock(PreNorm(d, attention),
                                          PreNorm(d, FeedForward(d, mult=config.ff_mult, dropout=config.dropout)),
                                          g_chunks=config.ff_chunks))
            if isinstance(attention, LSHSelfAttention):
                self.lsh_attention[i] = attention
        self.layers = ReversibleSequence(blocks, engine=FastEngine())
        self.norm = nn.LayerNorm(d)
        self.length_multiple = config.length_multiple
        self.set_hash_seed(config.hash_seed)

    def lsh_layers(self) -> list[int]:
        return list(self.lsh_attention)

    def set_hash_seed(self, seed: int | None) -> None:
        """Fix LSH rotations (layer i gets seed + i), or None for fresh rotations on every call.  The model
        starts with config.hash_seed; self.config keeps that value whatever is set here."""
        for i, attention in self.lsh_attention.items():
            attention.hash_seed = None if seed is None else seed + i

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        x, mask, T = self._embed(tokens, mask)
        y1, y2 = self.layers(x, x, reversible=self.config.reversible, mask=mask, rotary=self._rotary(x))
        return self.norm((y1 + y2) / 2)[:, :T]

    @torch.no_grad()
    def inspect(self, tokens: Tensor, mask: Tensor | None = None, layers: list[int] | None = None,
                top_k: int = 8, queries: Queries = None) -> dict[int, LSHInspection]:
        """Each requested LSH layer's LSHInspection (buckets, top attended positions), keyed by layer index.

        Computed on the layer's actual normed input, with the RNG state its forward pass then uses,
        so with hash_seed None the reported buckets are those of this very call.
        queries: the tokens whose top attended keys to compute, as slice(start, stop), (start, stop) or
        range(start, stop) within [0, length); None: all. Every layer still runs on, and hashes,
        the whole input, so a ranged result equals that slice of the full one; the top-key search,
        which dominates the cost, then scales with the range instead of the input length.
        """
        lsh = self.lsh_layers()
        wanted = lsh if layers is None else sorted(set(layers))
        not_lsh = [i for i in wanted if i not in lsh]
        if not_lsh:
            raise UsageError(f"layer {not_lsh[0]} is not an LSH layer; LSH layers are {lsh}")
        x, mask, T = self._embed(tokens, mask)
        chosen = query_range(queries, T)  # the user's tokens: internal padding is never a query
        x1 = x2 = x
        rotary = self._rotary(x)
        found = {}
        for i in range(max(wanted, default=-1) + 1):
            if i in wanted:
                with RngState(x.device).replay():
                    normed = self.layers.blocks[i].f.norm(x2)
                    found[i] = _trim(inspect(self.lsh_attention[i], normed, mask=mask, top_k=top_k, queries=chosen,
                                             rotary=rotary), T)
            x1, x2 = self.layers.run_blocks(x1, x2, slice(i, i + 1), mask=mask, rotary=rotary)
        return found

    def _rotary(self, x: Tensor) -> Rotary:
        """The rotary angles of positions 0 .. T - 1 of the embedded x [B, T, d]: once per call, for every layer."""
        return rotary_angles(torch.arange(x.shape[1], device=x.device), self.config.d_model // self.config.heads)

    def _embed(self, tokens: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor | None, int]:
        """Validate, pad to length_multiple, embed. Returns (x, mask or None if all real, original T)."""
        if tokens.dim() != 2 or tokens.dtype.is_floating_point or tokens.dtype == torch.bool:
            raise UsageError(f"tokens must be an integer tensor [batch, length], got {tokens.dtype} "
                             f"of shape {list(tokens.shape)}")
        B, T = tokens.shape
        if mask is not None:
            if mask.shape != tokens.shape:
                raise UsageError(f"mask shape {list(mask.shape)} does not match tokens {list(tokens.shape)}")
            mask = mask.to(device=tokens.device, dtype=torch.bool)
            # masked content must not matter, whatever it is
            tokens = tokens.masked_fill(~mask, self.config.pad_token_id)
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.config.vocab_size):
            bad = tokens[(tokens < 0) | (tokens >= self.config.vocab_size)][0].item()
            raise InputError(f"token id {bad} is outside the vocabulary (vocab_size {self.config.vocab_size})")
        pad = -T % self.length_multiple
        if pad:
            tokens = F.pad(tokens, (0, pad), value=self.config.pad_token_id)
            if mask is None:
                mask = torch.ones(B, T, dtype=torch.bool, device=tokens.device)
            mask = F.pad(mask, (0, pad), value=False)
        return self.token_emb(tokens), mask, T


def _trim(inspection: LSHInspection, T: int) -> LSHInspection:
    """Drop the internal padding positions from an LSHInspection (its queries already lie below T)."""
    return dataclasses.replace(inspection, buckets=inspection.buckets[..., :T])
