"""The window grid of `genoformer predict`: where windows lie on a contig and which bases each writes.

Window i of a contig covers [i*step, i*step + window) and keeps [i*step + margin, (i+1)*step +
margin); the first keeps from base 0, the last to the contig end (padded past it). The grid
depends on the contig length alone, never on the regions asked for, which is what makes a
region's predictions equal to the same bases' predictions inside a larger run.
"""
from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from genoformer.coords import Interval, IntervalSet
from genoformer.errors import UsageError
from genoformer.data.windows import Window


@dataclass(frozen=True)
class Grid:
    """Window placement on one contig of `length` bases (see the module docstring)."""
    window: int
    margin: int
    step: int
    length: int

    @property
    def n_windows(self) -> int:
        return max(1, math.ceil((self.length - self.margin) / self.step))

    def kept(self, i: int) -> tuple[int, int]:
        """[start, end) of the bases window i writes."""
        start = 0 if i == 0 else i * self.step + self.margin
        end = self.length if i == self.n_windows - 1 else (i + 1) * self.step + self.margin
        return start, end

    def window_of(self, position: int) -> int:
        """The window whose kept part holds `position`."""
        return min(max(position - self.margin, 0) // self.step, self.n_windows - 1)

    def to_window(self, contig: str, i: int) -> Window:
        """Window i of `contig` (n_valid < window where it runs past the contig end)."""
        start = i * self.step
        return Window(contig, start, start + self.window, min(self.window, self.length - start))


def grid_step(window: int, margin: int, token_stride: int) -> int:
    """window - 2*margin rounded down to the token stride; UsageError when no base would be kept."""
    step = (window - 2 * margin) // token_stride * token_stride
    if step < 1:
        raise UsageError(f"margin {margin:,} leaves no bases to keep in a {window:,}-base window "
                         f"(window - 2*margin must be at least the token stride, {token_stride})",
                         hint=f"use --margin {max((window - token_stride) // 2, 0):,} or less")
    return step


@dataclass
class PlannedWindow:
    index: int  # position in the run's window list (the done mask)
    contig: str
    window: Window
    writes: list[tuple[int, int]]  # [start, end) ranges this window writes (kept part ∩ regions)


def plan_windows(intervals: list[Interval], lengths: dict[str, int], window: int, margin: int,
          step: int) -> tuple[dict[str, np.ndarray], int]:
    """Per contig (in the intervals' order), the sorted grid indices of the windows needed; and their total.

    `intervals` must be merged and sorted (windows.regions does that).
    """
    needed: dict[str, list[np.ndarray]] = {}
    for iv in intervals:
        g = Grid(window, margin, step, lengths[iv.contig])
        needed.setdefault(iv.contig, []).append(np.arange(g.window_of(iv.start), g.window_of(iv.end - 1) + 1))
    plan = {c: np.unique(np.concatenate(parts)) for c, parts in needed.items()}
    return plan, sum(len(v) for v in plan.values())


def iter_planned(plan: dict[str, np.ndarray], intervals: list[Interval], lengths: dict[str, int],
                  window: int, margin: int, step: int) -> Iterator[PlannedWindow]:
    """The planned windows in run order, each with the [start, end) ranges it writes."""
    index = 0
    wanted = IntervalSet(intervals)
    for contig, grid_ids in plan.items():
        g = Grid(window, margin, step, lengths[contig])
        for i in grid_ids.tolist():
            writes = [(iv.start, iv.end) for iv in wanted.within(contig, *g.kept(i))]
            yield PlannedWindow(index, contig, g.to_window(contig, i), writes)
            index += 1
