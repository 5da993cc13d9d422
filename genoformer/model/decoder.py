"""Per-base decoder: token states back to 1 bp, joined with the stem's per-base features, then convolutions.

AlphaGenome-style upsampling from the coarse token grid: each base takes the state of the token
that owns it (layout.owner_index: exactly one per base for any k and stride <= k) plus a learned
embedding of its place in that k-mer, adds the stem's features of the same base (the U-Net skip
connection), and a few residual convolutions mix neighbours before the per-base logits. So a base's
prediction is made from its own evidence, with the encoder adding context from the whole window.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..tokenize import KmerTokenizer, ProteinTokenizer
from .layout import owner_index
from .stem import BLOCK_KERNEL, ConvBlock, masked, padding_keep


class PerBaseDecoder(nn.Module):
    """hidden [B, T, d], skip [B, W, skip_width] or None -> logits [B, W, n_classes]."""

    def __init__(self, d_model: int, tokenizer: KmerTokenizer | ProteinTokenizer, n_classes: int, width: int,
                 depth: int, skip_width: int = 0, dropout: float = 0.0):
        super().__init__()
        self.tokenizer = tokenizer
        self.up = nn.Linear(d_model, width)
        self.offset = nn.Embedding(tokenizer.k, width)  # the base's place in its owner's k-mer
        self.skip = nn.Linear(skip_width, width) if skip_width else None
        self.blocks = nn.ModuleList([ConvBlock(width, BLOCK_KERNEL, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, n_classes)

    def forward(self, hidden: Tensor, n_bases: int, skip: Tensor | None = None, valid: Tensor | None = None) -> Tensor:
        owner, offset = owner_index(self.tokenizer, n_bases, hidden.device)
        # padding bases (valid False) are zero between layers: a padded sequence decodes as it does alone
        keep = padding_keep(None if valid is None else valid[:, :n_bases], hidden.dtype)
        x = self.up(hidden)[:, owner] + self.offset(offset)
        if self.skip is not None:
            if skip is None:
                raise ValueError("this decoder joins the stem's per-base features; pass skip [B, W, C]")
            x = x + self.skip(skip[:, :n_bases])
        x = masked(x, keep)
        for block in self.blocks:
            x = masked(block(x, keep), keep)
        return self.out(self.norm(x))
