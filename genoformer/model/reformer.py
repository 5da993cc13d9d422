"""Reformer encoder: token embedding -> reversible blocks of (attention, feed-forward) -> LayerNorm.

Positions are rotary (positions.py), computed per call from token indices: no table, so a
window of 1,048,576 tokens or more costs nothing extra and scores depend only on offsets.
Users pass any length; the sequence is padded inside to a multiple of 2 * bucket_size (LSH)
and window_size (local) with masked positions, and the padding is stripped from the output.
Mixed precision: run under torch.autocast (bf16 on GPU); masks use finite constants.
"""
from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from ..errors import CheckpointError, InputError, OutputError, UsageError
from .attention import FullAttention, LocalAttention
from .config import ReformerConfig
from ..outputs import write_bytes as atomic_write
from .feedforward import FeedForward
from .positions import Rotary, rotary_angles
from .reversible import ReversibleBlock, ReversibleSequence, RngState

if TYPE_CHECKING:
    from .lsh import LSHInspection, Queries

WEIGHTS_NAME, CONFIG_NAME = "model.safetensors", "config.json"


class PreNorm(nn.Module):
    def __init__(self, d_model: int, fn: nn.Module):
        super().__init__()
        self.norm, self.fn = nn.LayerNorm(d_model), fn

    def forward(self, x: Tensor, **kwargs) -> Tensor:
        return self.fn(self.norm(x), **kwargs)


def make_attention(kind: str, config: ReformerConfig) -> nn.Module:
    common = dict(causal=config.causal, dropout=config.dropout)
    if kind == "full":
        return FullAttention(config.d_model, config.heads, **common)
    if kind == "local":
        return LocalAttention(config.d_model, config.heads, window_size=config.window_size, **common)
    from .lsh import LSHSelfAttention  # imported here so full/local models need no LSH code

    return LSHSelfAttention(config.d_model, config.heads, bucket_size=config.bucket_size,
                            n_hashes=config.n_hashes, hash_seed=None, **common)


class Reformer(nn.Module):
    """tokens int64 [B, T] (any T), mask bool [B, T] (True = real) -> hidden states [B, T, d_model]."""

    def __init__(self, config: ReformerConfig):
        super().__init__()
        self.config = config
        d = config.d_model
        self.token_emb = nn.Embedding(config.vocab_size, d)
        self.layers = ReversibleSequence([
            ReversibleBlock(PreNorm(d, make_attention(kind, config)),
                            PreNorm(d, FeedForward(d, mult=config.ff_mult, dropout=config.dropout)),
                            g_chunks=config.ff_chunks)
            for kind in config.attention_kinds
        ])
        self.norm = nn.LayerNorm(d)
        multiples = {"lsh": 2 * config.bucket_size, "local": config.window_size, "full": 1}
        self.length_multiple = math.lcm(*(multiples[k] for k in config.attention_kinds))
        self.set_hash_seed(config.hash_seed)

    def lsh_layers(self) -> list[int]:
        return [i for i, kind in enumerate(self.config.attention_kinds) if kind == "lsh"]

    def set_hash_seed(self, seed: int | None) -> None:
        """Fix LSH rotations (layer i gets seed + i), or None for fresh rotations on every call."""
        for i in self.lsh_layers():
            self.layers.blocks[i].f.fn.hash_seed = None if seed is None else seed + i

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
        from .lsh import query_range

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
        for i, block in enumerate(self.layers.blocks[: max(wanted, default=-1) + 1]):
            if i in wanted:
                with RngState(x.device).replay():
                    found[i] = _trim(block.f.fn.inspect(block.f.norm(x2), mask=mask, top_k=top_k, queries=chosen,
                                                        rotary=rotary), T)
            x1, x2 = block(x1, x2, mask=mask, rotary=rotary)
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


def save_pretrained(model: Reformer, directory: str | os.PathLike) -> None:
    """Write model.safetensors (weights, config in its metadata) and config.json, each atomically."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{directory}: cannot create directory ({e.strerror or e})") from None
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": "pt", "genoformer_config": model.config.to_json()}
    atomic_write(directory / WEIGHTS_NAME, safetensors_bytes(tensors, metadata=metadata))
    model.config.save_json(directory / CONFIG_NAME)


def load_pretrained(directory: str | os.PathLike, device: str | torch.device = "cpu") -> Reformer:
    """Rebuild a Reformer from save_pretrained output (no code is executed: JSON + safetensors only); eval mode."""
    directory = Path(directory)
    config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise CheckpointError(f"{path}: not found (is {directory} a genoformer model directory?)")
    try:
        config = ReformerConfig.load_json(config_path)
    except (UsageError, InputError) as e:
        raise CheckpointError(str(e), hint=e.hint) from None
    try:
        with safe_open(str(weights_path), framework="pt", device="cpu") as fh:
            metadata = fh.metadata() or {}
            tensors = {name: fh.get_tensor(name) for name in fh.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{weights_path}: not a readable safetensors file ({e})") from None
    if metadata.get("genoformer_config") != config.to_json():
        raise CheckpointError(f"{config_path}: does not match the config stored in {weights_path}")
    model = Reformer(config)
    expected = model.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{weights_path}: missing tensors {missing[:3]}, unexpected tensors {unexpected[:3]}")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise CheckpointError(f"{weights_path}: tensor {name} has shape {list(tensor.shape)}, "
                                  f"the config needs {list(expected[name].shape)}")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{weights_path}: non-finite values in {name}")
    model.load_state_dict(tensors)
    return model.to(device).eval()
