"""ReformerConfig: the architecture as a validated dataclass, saved as JSON beside the weights."""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass

from ..errors import UsageError, refuse_unknown
from ..io.json_files import read_json
from ..outputs import write_text

ATTENTION_KINDS = ("lsh", "local", "full")


@dataclass
class ReformerConfig:
    vocab_size: int
    d_model: int = 256
    depth: int = 6
    heads: int = 4
    bucket_size: int = 64  # LSH: keys per query = 2 * bucket_size (own chunk + previous)
    n_hashes: int = 4  # LSH hashing rounds
    attention: str | list[str] = "lsh"  # one kind for every layer, or one per layer
    reversible: bool = True  # reversible residuals: activation memory flat in depth
    ff_mult: int = 4
    ff_chunks: int = 1  # feed-forward over at least this many sequence chunks (more on long inputs: reversible.py)
    dropout: float = 0.0
    causal: bool = False
    window_size: int = 64  # local attention block; 64 == bucket_size gives LSH's keys per query
    hash_seed: int | None = None  # None: fresh hashing rotations per call (training)
    pad_token_id: int = 0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "d_model", "depth", "heads", "bucket_size", "n_hashes",
                     "ff_mult", "ff_chunks", "window_size"):
            _check_int(name, getattr(self, name), minimum=1)
        _check_int("pad_token_id", self.pad_token_id, minimum=0)
        if self.hash_seed is not None:
            _check_int("hash_seed", self.hash_seed, minimum=0)
        for name in ("reversible", "causal"):
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"config {name} must be true or false, got {getattr(self, name)!r}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise UsageError(f"config dropout must be a number in [0, 1), got {self.dropout!r}")
        if self.pad_token_id >= self.vocab_size:
            raise UsageError(f"config pad_token_id {self.pad_token_id} is outside the vocabulary "
                             f"(vocab_size {self.vocab_size})")
        if self.d_model % self.heads:
            divisors = [h for h in range(1, self.d_model + 1) if self.d_model % h == 0 and (self.d_model // h) % 2 == 0]
            raise UsageError(f"config heads ({self.heads}) must divide d_model ({self.d_model})",
                             hint=f"use heads in {divisors[:8]}")
        if (self.d_model // self.heads) % 2:
            raise UsageError(f"config d_model / heads = {self.d_model // self.heads} must be even for rotary positions",
                             hint=f"use d_model {self.heads * (self.dim_head + 1)}")
        self.attention = _check_attention(self.attention, self.depth)

    @property
    def dim_head(self) -> int:
        return self.d_model // self.heads

    @property
    def length_multiple(self) -> int:
        """The encoder pads every sequence to a multiple of this: 2 * bucket_size for LSH, window_size for local."""
        multiples = {"lsh": 2 * self.bucket_size, "local": self.window_size, "full": 1}
        return math.lcm(*(multiples[k] for k in self.attention_kinds))

    @property
    def attention_kinds(self) -> list[str]:
        """The attention kind of each layer."""
        return [self.attention] * self.depth if isinstance(self.attention, str) else list(self.attention)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, values: dict) -> ReformerConfig:
        if not isinstance(values, dict):
            raise UsageError(f"config must be a JSON object, got {type(values).__name__}")
        refuse_unknown(values, {f.name for f in dataclasses.fields(cls)}, "config key")
        if "vocab_size" not in values:
            raise UsageError("config needs vocab_size")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_json(self, path: str | os.PathLike) -> None:
        write_text(path, self.to_json())

    @classmethod
    def load_json(cls, path: str | os.PathLike) -> ReformerConfig:
        values = read_json(path, "a model config")
        try:
            return cls.from_dict(values)
        except UsageError as e:
            raise UsageError(f"{path}: {e}", hint=e.hint) from None


def _check_int(name: str, value, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"config {name} must be an integer, got {value!r}")
    if value < minimum:
        raise UsageError(f"config {name} must be >= {minimum}, got {value}")


def _check_attention(attention, depth: int) -> str | list[str]:
    kinds = [attention] if isinstance(attention, str) else attention
    if not isinstance(kinds, (list, tuple)) or not all(isinstance(k, str) for k in kinds):
        raise UsageError(f"config attention must be one of {ATTENTION_KINDS} or a list of them, got {attention!r}")
    unknown = sorted(set(kinds) - set(ATTENTION_KINDS))
    if unknown:
        raise UsageError(f"config attention kind {unknown[0]!r} is unknown; use one of {ATTENTION_KINDS}")
    if isinstance(attention, str):
        return attention
    if len(kinds) != depth:
        raise UsageError(f"config attention lists {len(kinds)} layers but depth is {depth}",
                         hint=f"give {depth} kinds or set depth to {len(kinds)}")
    return list(kinds)
