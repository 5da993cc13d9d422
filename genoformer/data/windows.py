"""Fixed-size windows over genomic intervals, the unit the model reads.

A Window covers contig:[start, end) with end - start == W for every window of a tiling. Its first
`n_valid` bases lie inside the tiled interval; the rest is padding (read as N, masked out of losses
and outputs), also where it runs past the contig end. Nothing is clipped silently: the last window of
an interval keeps its full size W and says how much of it is real.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from genoformer.coords import Interval, check_interval, merge_intervals
from genoformer.errors import UsageError


@dataclass(frozen=True, order=True)
class Window:
    """Bases [start, end) of `contig`; [start, start + n_valid) are real, the rest padding."""
    contig: str
    start: int
    end: int
    n_valid: int

    def __post_init__(self):
        if not (0 <= self.start < self.end and 0 <= self.n_valid <= self.end - self.start):
            raise ValueError(f"bad window {self.contig}:[{self.start}, {self.end}) with n_valid {self.n_valid}")

    def __len__(self) -> int:
        return self.end - self.start

    @property
    def valid_end(self) -> int:
        return self.start + self.n_valid

    def valid_mask(self) -> np.ndarray:
        """bool [W]: True for real bases, False for padding."""
        return np.arange(len(self)) < self.n_valid

    def to_interval(self) -> Interval:
        """The real part, contig:[start, start + n_valid)."""
        return Interval(self.contig, self.start, self.valid_end)


def check_window_size(window: int, stride: int | None = None) -> int:
    """The stride (default: window) after checking both are positive and stride <= window."""
    for name, value in (("window", window), ("stride", stride)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer))
                                  or value < 1):
            raise UsageError(f"{name} must be a positive number of bases, got {value!r}")
    stride = window if stride is None else stride
    if stride > window:
        raise UsageError(f"stride {stride:,} is larger than the window {window:,}, so bases between windows "
                         "would never be seen", hint=f"use a stride of at most {window:,}")
    return int(stride)


def regions(intervals: Iterable[Interval] | None,
            contig_lengths: Mapping[str, int] | None) -> list[Interval]:
    """The intervals to cover: whole contigs by default; checked, merged, in reference order."""
    if intervals is None:
        if contig_lengths is None:
            raise UsageError("give intervals or contig lengths (to cover whole contigs)")
        return [Interval(c, 0, n) for c, n in contig_lengths.items() if n > 0]
    intervals = list(intervals)
    if contig_lengths is None:
        return merge_intervals(intervals)
    for iv in intervals:
        check_interval(iv.contig, iv.start, iv.end, contig_lengths)
    order = {c: i for i, c in enumerate(contig_lengths)}
    return sorted(merge_intervals(intervals), key=lambda iv: order[iv.contig])


def tile(intervals: Iterable[Interval] | None, window: int, stride: int | None = None,
         contig_lengths: Mapping[str, int] | None = None) -> list[Window]:
    """Windows of `window` bases every `stride` bases (default: window) over each interval.

    Whole contigs when `intervals` is None. Overlapping intervals are merged first, so no base is
    tiled twice by accident; windows start at each interval's start and the last one ends at or past
    the interval end (n_valid < window there). With contig_lengths, intervals must lie on the contigs.
    """
    stride = check_window_size(window, stride)
    out = []
    for iv in regions(intervals, contig_lengths):
        if not len(iv):
            continue
        n = 1 + -(-max(len(iv) - window, 0) // stride)
        starts = iv.start + np.arange(n, dtype=np.int64) * stride
        n_valid = np.minimum(window, iv.end - starts)
        out += [Window(iv.contig, s, s + window, v) for s, v in zip(starts.tolist(), n_valid.tolist())]
    return out


def windows_containing(windows: Sequence[Window], contig: str, position: int) -> list[int]:
    """Indices of the windows whose real (non-padding) bases include the 0-based `position`."""
    return [i for i, w in enumerate(windows) if w.contig == contig and w.start <= position < w.valid_end]
