"""Seeded, resumable samplers: random windows over genomic intervals, shuffled passes over sequences.

Each records (seed, epoch, items consumed) in state_dict(), so a resumed run continues the very
stream an uninterrupted one would have drawn.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import numpy as np
from torch.utils.data import Sampler

from genoformer.coords import Interval
from genoformer.data.windows import Window, check_window_size, regions
from genoformer.errors import UsageError


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


class SequenceSampler(ResumableSampler):
    """Seeded shuffled passes over `n_items`, `num_samples` draws in all, resumable like RandomWindowSampler.

    Draw i is item perm_e[i % n_items] of pass e = i // n_items, perm_e from numpy's PCG64(seed, e);
    state_dict() records the draws consumed, and load_state_dict continues right after them.
    """

    def __init__(self, n_items: int, num_samples: int, *, seed: int = 0):
        if n_items < 1:
            raise UsageError("no sequences to sample")
        self.n_items, self.num_samples, self.seed = int(n_items), int(num_samples), int(seed)
        self.epoch, self.consumed = 0, 0
        self._perm: tuple[int, np.ndarray] | None = None

    def __len__(self) -> int:
        return self.num_samples

    def _item(self, i: int) -> int:
        epoch = i // self.n_items
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.Generator(np.random.PCG64([self.seed, epoch])).permutation(self.n_items))
        return int(self._perm[1][i % self.n_items])

    def __iter__(self) -> Iterator[int]:
        while self.consumed < self.num_samples:
            self.consumed += 1
            yield self._item(self.consumed - 1)
        self.epoch, self.consumed = self.epoch + 1, 0
