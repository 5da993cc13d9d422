"""Per-base convolutional stem: bases (+ soft-mask bit, + read evidence) -> per-base features and token embeddings.

As in the conv towers of Enformer, Borzoi and AlphaGenome, a few 1-D convolutions read the
per-base inputs before attention: the one-hot letter (A C G T N for DNA, the protein alphabet
for residues), the soft-mask bit and, for read-based tasks, the per-base read evidence scaled
by what each column measures (io.evidence.EVIDENCE_UNITS) and, for a mean over some of the reads,
weighed by their share (io.evidence.EVIDENCE_MEAN_OVER: EVIDENCE_SCALINGS). A convolution with kernel k and
stride `stride` then pools them onto the token grid (token i reads bases [i*stride, i*stride + k),
exactly the bases its k-mer spells), and the result is added to the k-mer embedding, so the
encoder's first layer already sees each base's own evidence. The per-base features also feed the
decoder's skip connection (decoder.py).

Receptive field: a base's features depend on the inputs within RADIUS bases of it. Padding bases
(`valid` False) read as nothing: their features are zero after every layer, so a sequence padded
in a batch gets exactly the features it gets alone.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..io.evidence import EVIDENCE_FEATURES, EVIDENCE_MEAN_OVER, EVIDENCE_SCALINGS, EVIDENCE_UNITS
from ..tokenize import KmerTokenizer, ProteinTokenizer

INPUT_KERNEL, BLOCK_KERNEL, STEM_BLOCKS = 9, 5, 2
RADIUS = INPUT_KERNEL // 2 + STEM_BLOCKS * (BLOCK_KERNEL // 2)
QUALITY_SCALE = 60.0  # phred qualities (MAPQ tops out at 60) to about 0..1


def convolve(conv: nn.Conv1d, x: Tensor) -> Tensor:
    """conv(x) for x [B, C, W]. Outside training one window at a time: convolution kernels (oneDNN,
    cuDNN) pick their algorithm by batch size, and a window's prediction must not depend on the
    batch it was predicted in (predict --resume with another --batch-size writes the same file)."""
    if conv.training or x.shape[0] == 1:
        return conv(x)
    return torch.cat([conv(x[i:i + 1]) for i in range(x.shape[0])])


def padding_keep(valid: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """valid [B, W] -> keep [B, W, 1] (1 at real bases, 0 at padding), or None where no base is padding:
    most windows are whole, and multiplying their features by ones costs a pass over them per layer."""
    if valid is None or bool(valid.all()):
        return None
    return valid[..., None].to(dtype)


def masked(x: Tensor, keep: Tensor | None) -> Tensor:
    """x with its padding bases zeroed (`keep` from padding_keep)."""
    return x if keep is None else x * keep


class ConvBlock(nn.Module):
    """x + dropout(conv(gelu(norm(x)))) over bases: [B, W, C] -> [B, W, C], 'same' zero padding.

    `keep` [B, W, 1] (0 at padding bases): the convolution reads padding bases as zeros, as it reads the
    bases past a sequence's end, so a padded sequence gets what it gets alone (norm(0) is the norm's
    bias, and gelu of it is not 0 once the model is trained)."""

    def __init__(self, width: int, kernel: int, dropout: float = 0.0):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.conv = nn.Conv1d(width, width, kernel, padding=kernel // 2)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        return x + self.drop(convolve(self.conv, masked(F.gelu(self.norm(x)), keep).transpose(1, 2)).transpose(1, 2))


class EvidenceScaling(nn.Module):
    """evidence [B, W, >= n] -> [B, W, n] of the first n columns, each scaled by its unit:
    depth and lengths log1p, read counts as a share of depth, qualities / 60, fractions as they are;
    with `scaling` "weighed", a mean over some of the reads then times their share (EVIDENCE_SCALINGS)."""

    def __init__(self, n_features: int, scaling: str = "weighed"):
        super().__init__()
        if scaling not in EVIDENCE_SCALINGS:
            raise ValueError(f"evidence scaling {scaling!r}: choose from {', '.join(EVIDENCE_SCALINGS)}")
        names = EVIDENCE_FEATURES[:n_features]
        units = [EVIDENCE_UNITS[name] for name in names]
        self.n_features = n_features
        weighed = [scaling == "weighed" and EVIDENCE_MEAN_OVER.get(name) in names for name in names]
        self.register_buffer("weighed", torch.tensor(weighed), persistent=False)
        self.register_buffer("share_of", torch.tensor([names.index(EVIDENCE_MEAN_OVER[name]) if w else i
                                                       for i, (name, w) in enumerate(zip(names, weighed))]),
                             persistent=False)
        self.depth = names.index("depth") if "depth" in names else None
        for unit in ("count", "quality"):
            self.register_buffer(unit, torch.tensor([u == unit for u in units]), persistent=False)
        logged = [u in ("depth", "length") or (u == "count" and self.depth is None) for u in units]
        self.register_buffer("logged", torch.tensor(logged), persistent=False)

    def forward(self, evidence: Tensor) -> Tensor:
        ev = evidence[..., :self.n_features].float().clamp_min(0)
        out = torch.where(self.logged, torch.log1p(ev), ev)
        out = torch.where(self.quality, ev / QUALITY_SCALE, out)
        if self.depth is not None:
            out = torch.where(self.count, ev / ev[..., self.depth:self.depth + 1].clamp_min(1), out)
        return torch.where(self.weighed, out * out[..., self.share_of], out)


class Stem(nn.Module):
    """(bases [B, W], soft_mask [B, W], evidence [B, W, F]) -> (per-base features [B, W, width],
    token embeddings [B, T, d_model] for the T = tokenizer.n_tokens(W) tokens)."""

    def __init__(self, tokenizer: KmerTokenizer | ProteinTokenizer, d_model: int, width: int,
                 n_evidence: int = 0, dropout: float = 0.0, evidence_scaling: str = "weighed"):
        super().__init__()
        self.tokenizer, self.n_letters, self.width = tokenizer, len(tokenizer.alphabet), width
        self.sequence_in = nn.Conv1d(self.n_letters + 1, width, INPUT_KERNEL, padding=INPUT_KERNEL // 2)
        # a separate input convolution for the reads, so an mlm stem (no reads) transfers to a variant model
        self.evidence = EvidenceScaling(n_evidence, evidence_scaling) if n_evidence else None
        self.evidence_in = nn.Conv1d(n_evidence, width, INPUT_KERNEL, padding=INPUT_KERNEL // 2) \
            if n_evidence else None
        self.blocks = nn.ModuleList([ConvBlock(width, BLOCK_KERNEL, dropout) for _ in range(STEM_BLOCKS)])
        self.to_tokens = nn.Conv1d(width, d_model, tokenizer.k, stride=tokenizer.stride)

    def forward(self, bases: Tensor, soft_mask: Tensor | None = None, evidence: Tensor | None = None,
                valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        B, W = bases.shape
        dtype = self.sequence_in.weight.dtype  # float32, or the model's dtype when it is converted (.double())
        keep = padding_keep(valid, dtype)
        letters = F.one_hot(bases.long().clamp(0, self.n_letters - 1), self.n_letters).to(dtype)
        soft = torch.zeros(B, W, 1, device=bases.device, dtype=dtype) if soft_mask is None \
            else soft_mask[..., None].to(dtype)
        x = convolve(self.sequence_in, masked(torch.cat((letters, soft), -1), keep).transpose(1, 2))
        if self.evidence_in is not None:
            if evidence is None:
                raise ValueError("this stem reads read evidence; pass evidence [B, W, F]")
            x = x + convolve(self.evidence_in, masked(self.evidence(evidence), keep).to(x.dtype).transpose(1, 2))
        x = masked(x.transpose(1, 2), keep)
        for block in self.blocks:
            x = masked(block(x, keep), keep)
        n_tokens = self.tokenizer.n_tokens(W)
        # the last k-mer may run past the window: its missing bases contribute zeros
        covered = (n_tokens - 1) * self.tokenizer.stride + self.tokenizer.k
        tokens = convolve(self.to_tokens, F.pad(x.transpose(1, 2), (0, covered - W))).transpose(1, 2)
        return x, tokens
