"""torch Datasets and samplers over windows of a reference (+ reads, truth variants, annotation tracks).

Sources open their file handles lazily per process (Reference, Alignments, TruthVariants), so a
DataLoader with workers gives each worker its own handles; the dataset itself holds no open file.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from genoformer.coords import Interval
from genoformer.errors import FastaError, InputError, UsageError
from genoformer.tokenize import KmerTokenizer, ProteinTokenizer, soft_mask
from genoformer.windows import Window, check_window_size, regions

if TYPE_CHECKING:
    from genoformer.io.alignments import Alignments
    from genoformer.io.fasta import Reference
    from genoformer.io.tracks import Tracks
    from genoformer.io.variants import TruthVariants

IGNORE_INDEX = -100  # torch.nn.functional.cross_entropy's default ignore_index


class WindowDataset(Dataset):
    """One item per window: tokens plus optional per-base read evidence and labels.

    An item is a dict of tensors (W bases, T = tokenizer.n_tokens(W) tokens):
      tokens int64 [T]       k-mers of the real bases, then [PAD] tokens
      token_mask bool [T]    False for [PAD] tokens (those holding no real base)
      valid bool [W]         False for padding bases
      soft_mask bool [W]     lowercase (soft-masked) reference bases
      evidence float32 [W, F]   with `alignments` (F = len(EVIDENCE_FEATURES)); 0 at padding
      genotype, variant_type int64 [W]   with `variants`; -100 at unscored and padding bases
      tracks float32 [W, C]  with `tracks`; 0 at padding
      contig str, start int, n_valid int
    Index it by position in `windows`, or by a Window directly (as RandomWindowSampler yields).
    """

    def __init__(self, reference: Reference, windows: Sequence[Window],
                 tokenizer: KmerTokenizer | ProteinTokenizer, alignments: Alignments | None = None,
                 variants: TruthVariants | None = None, tracks: Tracks | None = None,
                 confident: list[Interval] | None = None):
        sizes = {len(w) for w in windows}
        if len(sizes) > 1:
            raise UsageError(f"windows of one dataset must share one size to batch, got {sorted(sizes)[:5]}")
        if confident is not None and variants is None:
            raise UsageError("confident regions only apply to truth variants; give variants too")
        self.reference, self.windows, self.tokenizer = reference, list(windows), tokenizer
        self.alignments, self.variants, self.tracks, self.confident = alignments, variants, tracks, confident

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, item: int | Window) -> dict:
        w = item if isinstance(item, Window) else self.windows[item]
        size, n, end = len(w), w.n_valid, w.valid_end
        seq = self.reference.fetch(w.contig, w.start, end)
        try:
            ids = self.tokenizer.encode(seq)
        except InputError as exc:
            raise FastaError(f"{self.reference.path}: window {w.contig}:{w.start + 1:,}-{end:,}: {exc}") from None
        n_tokens = self.tokenizer.n_tokens(size)
        tokens = np.full(n_tokens, self.tokenizer.pad_id, dtype=np.int64)
        tokens[:ids.size] = ids
        arrays = {"tokens": tokens, "token_mask": np.arange(n_tokens) < ids.size,
                "valid": w.valid_mask(), "soft_mask": _pad(soft_mask(seq), size, False)}
        if self.alignments is not None:
            arrays["evidence"] = _pad(self.alignments.evidence(w.contig, w.start, end), size, 0)
        if self.variants is not None:
            labels = self.variants.labels(w.contig, w.start, end, self.confident)
            for name in ("genotype", "variant_type"):
                scored = np.where(labels.mask, getattr(labels, name), IGNORE_INDEX).astype(np.int64)
                arrays[name] = _pad(scored, size, IGNORE_INDEX)
        if self.tracks is not None:
            arrays["tracks"] = _pad(self.tracks.mask(w.contig, w.start, end).astype(np.float32), size, 0)
        tensors = {key: torch.from_numpy(value) for key, value in arrays.items()}
        return tensors | {"contig": w.contig, "start": w.start, "n_valid": n}


def _pad(values: np.ndarray, size: int, fill) -> np.ndarray:
    """values [n, ...] -> [size, ...], the tail filled with `fill`."""
    out = np.full((size, *values.shape[1:]), fill, dtype=values.dtype)
    out[:len(values)] = values
    return out


class ResumableSampler:
    """Seed, epoch and items consumed of a seeded sampler with `num_samples` draws a pass, saved and restored."""

    seed: int
    num_samples: int
    epoch: int
    consumed: int

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "consumed": self.consumed}

    def load_state_dict(self, state: dict) -> None:
        if state.get("seed", self.seed) != self.seed:
            raise UsageError(f"sampler state has seed {state['seed']}, this sampler {self.seed}")
        consumed = int(state.get("consumed", 0))
        if not 0 <= consumed <= self.num_samples:
            raise UsageError(f"sampler state consumed {consumed} items of a {self.num_samples}-item pass")
        self.epoch, self.consumed = int(state.get("epoch", 0)), consumed


class RandomWindowSampler(ResumableSampler, Sampler):
    """Seeded random windows of `window` bases inside `intervals` (whole contigs when None).

    Every possible window start inside the (merged) intervals is equally likely; an interval shorter
    than `window` gives its one window, padded. Each pass yields `num_samples` Windows drawn from
    numpy's PCG64 seeded with (seed, epoch); the epoch advances after a full pass.

    Resuming: state_dict() records seed, epoch and items consumed. A DataLoader fetches ahead of the
    training loop, so a trainer should save its own count (batches done x batch size) as "consumed";
    load_state_dict continues the same pass right after that many items.
    """

    def __init__(self, intervals: Iterable[Interval] | None, window: int, num_samples: int, *, seed: int = 0,
                 contig_lengths: Mapping[str, int] | None = None):
        check_window_size(window)
        if isinstance(num_samples, bool) or not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise UsageError(f"num_samples must be a positive integer, got {num_samples!r}")
        ivs = [iv for iv in regions(intervals, contig_lengths) if len(iv)]
        if not ivs:
            raise UsageError("no bases to sample windows from (all intervals are empty)")
        self.window, self.num_samples, self.seed = int(window), int(num_samples), int(seed)
        self._contigs = [iv.contig for iv in ivs]
        self._starts = np.array([iv.start for iv in ivs], dtype=np.int64)
        self._ends = np.array([iv.end for iv in ivs], dtype=np.int64)
        n_starts = np.maximum(self._ends - self._starts - self.window, 0) + 1  # possible windows per interval
        self._cum, self._n_starts = np.cumsum(n_starts), n_starts
        self.epoch, self.consumed = 0, 0

    def __len__(self) -> int:
        return self.num_samples

    def _draw(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.Generator(np.random.PCG64([self.seed, epoch]))
        u = rng.integers(0, self._cum[-1], size=self.num_samples)
        which = np.searchsorted(self._cum, u, side="right")
        return which, self._starts[which] + u - (self._cum[which] - self._n_starts[which])

    def __iter__(self) -> Iterator[Window]:
        which, starts = self._draw(self.epoch)
        while self.consumed < self.num_samples:
            i = self.consumed
            iv, start = int(which[i]), int(starts[i])
            self.consumed += 1
            yield Window(self._contigs[iv], start, start + self.window,
                         int(min(self.window, self._ends[iv] - start)))
        self.epoch, self.consumed = self.epoch + 1, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.consumed = int(epoch), 0
