"""BucketMap: what `genoformer buckets` found over one region, in genomic coordinates.

The bottom of the buckets feature: the driver (run.py) makes one, and the statistics, plots and
file writers read it; none of them imports another.
"""
from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

from genoformer.coords import Interval
from genoformer.data.windows import Window
from genoformer.errors import UsageError


@dataclass
class BucketMap:
    """Bucket ids and top attended tokens of the selected LSH layers / heads / rounds, with coordinates.

    Token arrays have one entry per real token of the window (T), 0-based genomic coordinates:
      token_start, token_end  int64 [T]   bases the k-mer covers (end clipped to the window's real end)
      owned_start, owned_end  int64 [T]   bases whose bucket is this token's
      token_ids               int64 [T]   vocabulary ids
      buckets      int32 [n_layers, n_heads, n_rounds, T]   bucket id in [0, n_buckets)
      top_tokens   int32 [n_layers, n_heads, T, top_k]      most attended token indices (-1: none)
      top_weights  float32 [n_layers, n_heads, T, top_k]    their attention weight, summed over rounds
    Attended tokens are computed for the region's tokens only (-1 / 0 elsewhere): a 1 Mb window holds
    ~170,000 tokens, what users ask about is the region, and the search costs per query token.
    `layers`, `heads`, `rounds` name the model's indices (0-based) behind each axis position.
    """

    region: Interval
    window: Window
    k: int
    stride: int
    bucket_size: int
    n_buckets: int
    causal: bool
    hash_seed: int
    layers: list[int]
    heads: list[int]
    rounds: list[int]
    token_start: np.ndarray
    token_end: np.ndarray
    owned_start: np.ndarray
    owned_end: np.ndarray
    token_ids: np.ndarray
    buckets: np.ndarray
    top_tokens: np.ndarray
    top_weights: np.ndarray
    sequence_md5: str  # md5 of the window's real bases, upper-cased
    model: dict = field(default_factory=dict)  # provenance: path, sha256, task, model_config, tokenizer, head

    @property
    def contig(self) -> str:
        return self.region.contig

    @property
    def n_tokens(self) -> int:
        return len(self.token_start)

    def name(self, layer: int, head: int, round: int | None = None) -> str:
        """"L1.H0.R1" (or "L1.H0"): the label of a layer/head/round in every output."""
        return f"L{layer}.H{head}" + ("" if round is None else f".R{round}")

    def axes(self, layer: int, head: int, round: int = 0) -> tuple[int, int, int]:
        """Array positions of model layer/head/round; UsageError if they were not recorded."""
        for what, value, chosen in (("layer", layer, self.layers), ("head", head, self.heads),
                                    ("round", round, self.rounds)):
            if value not in chosen:
                raise UsageError(f"{what} {value} was not recorded (recorded: {', '.join(map(str, chosen))})")
        return self.layers.index(layer), self.heads.index(head), self.rounds.index(round)

    def token_of(self, positions) -> np.ndarray:
        """int64: the token owning each 0-based base of the contig, -1 outside the window's real bases."""
        pos = np.asarray(positions, dtype=np.int64)
        token = np.searchsorted(self.owned_end, pos, side="right")
        inside = (pos >= self.window.start) & (pos < self.window.valid_end)
        return np.where(inside, np.minimum(token, self.n_tokens - 1), -1)

    def bucket_at(self, layer: int, head: int, round: int, positions) -> np.ndarray:
        """int64: bucket id of each 0-based base (its owner token's), -1 outside the window's real bases."""
        li, hi, ri = self.axes(layer, head, round)
        token = self.token_of(positions)
        return np.where(token >= 0, self.buckets[li, hi, ri, np.maximum(token, 0)], -1).astype(np.int64)

    def top_attended(self, layer: int, head: int, position: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start, end, weight) of the tokens the token owning `position` attends to most, best first."""
        li, hi, _ = self.axes(layer, head, self.rounds[0])
        if not self.region.start <= position < self.region.end:
            raise UsageError(f"{self.contig}:{position + 1:,} is outside the region {self.region.to_region()}")
        token = int(self.token_of(position))
        keys, weights = self.top_tokens[li, hi, token], self.top_weights[li, hi, token]
        keep = keys >= 0
        return self.token_start[keys[keep]], self.token_end[keys[keep]], weights[keep]

    def region_tokens(self) -> np.ndarray:
        """bool [T]: tokens owning at least one base of the region."""
        return (self.owned_end > self.region.start) & (self.owned_start < self.region.end)

    def runs(self, layer: int, head: int, round: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start, end, bucket) of maximal runs of consecutive region bases in one bucket, in order."""
        li, hi, ri = self.axes(layer, head, round)
        tokens = np.flatnonzero(self.region_tokens())
        starts = np.maximum(self.owned_start[tokens], self.region.start)
        ends = np.minimum(self.owned_end[tokens], self.region.end)
        ids = self.buckets[li, hi, ri, tokens]
        first = np.r_[True, ids[1:] != ids[:-1]] if len(ids) else np.zeros(0, bool)
        last = np.r_[first[1:], True] if len(ids) else first
        return starts[first], ends[last], ids[first]


def bucket_rgb(n: int) -> np.ndarray:
    """float [n, 3] RGB in [0, 1] per bucket id: hues a golden-ratio step apart, so neighbouring ids differ."""
    ids = np.arange(n)
    hsv = np.stack([(ids * 0.6180339887) % 1.0, np.where(ids % 2, 0.75, 0.55), np.full(n, 0.8)], axis=1)
    return np.array([colorsys.hsv_to_rgb(*row) for row in hsv]).reshape(n, 3)
