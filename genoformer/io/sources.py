"""Per-base sources: the one contract a window reads them through, and the file handle they share.

A per-base source (the reference, read evidence, truth genotypes, annotation tracks; Selene's
`Target` idea) answers one question: what is known about each base of an interval?

    source.per_base(Interval("chr20", 10_000_000, 10_020_000))  # -> array with 20,000 rows

Contract of `per_base(interval)`:
- the interval is 0-based, half-open and must lie on the reference (RegionError otherwise; never
  clipped); an empty interval gives zero rows;
- the first axis is the bases of the interval, in order: row i is base `interval.start + i`;
- each source has one dtype and trailing shape, whatever the interval: Reference uint8 [L]
  (ASCII codes as stored), Alignments float32 [L, F] (F = len(EVIDENCE_FEATURES)), Tracks
  float32 [L, C] (1.0 where class c covers the base), TruthVariants a structured int64 [L] with
  one field per label (genotype, variant_type);
- `pad_value` is what a base that holds nothing reads as: the fill of padding past the real
  bases of a window, and, for truth, of the bases it does not score (UNSCORED). The source never
  pads itself; `WindowDataset` pads to the window.

Sources opening a file (Reference, Alignments, TruthVariants) derive from `LazyHandle`: the handle
opens on first use in each process and pickling drops it, so every DataLoader worker (forked or
spawned) reads through its own.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Protocol, runtime_checkable

import numpy as np

from genoformer.coords import Interval

UNSCORED = -100  # a label the loss ignores: torch.nn.functional.cross_entropy's default ignore_index


@runtime_checkable
class PerBaseSource(Protocol):
    """Anything that answers `per_base(interval)` with one row per base (see the module docstring)."""

    pad_value: Any

    def per_base(self, interval: Interval) -> np.ndarray:
        ...


class LazyHandle:
    """A file handle opened on first use in each process; pickling drops it.

    Subclasses implement `_new_handle()` (open and check the file, raising its typed errors) and
    read through `_open()`. A handle inherited across a fork is left alone, not closed: it belongs
    to the parent.
    """
    _handle: Any = None
    _handle_pid: int = -1

    def _new_handle(self) -> Any:
        raise NotImplementedError

    def _open(self) -> Any:
        """This process's handle, opened now if it has none."""
        if self._handle is None or self._handle_pid != os.getpid():
            self._handle = self._new_handle()
            self._handle_pid = os.getpid()
        return self._handle

    def _discard_handle(self) -> None:
        """Close and forget this process's handle (a corrupt file may fail to close again: ignored)."""
        handle, self._handle = self._handle, None
        if handle is not None and self._handle_pid == os.getpid():
            with contextlib.suppress(OSError):
                handle.close()

    def close(self) -> None:
        self._discard_handle()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_handle": None, "_handle_pid": -1}
