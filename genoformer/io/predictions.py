"""Per-base predictions in HDF5 (format "genoformer-predictions", version 1; see docs/hdf5.md).

Layout: root attributes with provenance, and per contig `/contigs/<contig>` holding per-base
datasets over the whole contig (0-based index = position): `covered` bool [L], `<task>/probs`
float16 [L, C] and, for variant models that read a BAM, `variant/alt`, `variant/depth` and
`variant/deletion_fraction`. Datasets are chunked and gzip-compressed; chunks never written
are never stored, so a 100 kb region of a 248 Mb contig costs about what the region does.

This module holds the format's constants and its reader; genoformer.predict.writer writes it
(crash safety, RELIABILITY.md §5: a run writes `partial_path(out)` and only a finished file gets
`complete = True` and is renamed onto the final name). Readers refuse anything that is not a
complete file of this format.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from genoformer.coords import Interval, IntervalSet, parse_region, runs
from genoformer.errors import InputError, RegionError

FORMAT, FORMAT_VERSION = "genoformer-predictions", 1
CHUNK = 65_536  # bases per chunk: ~400 kB of float16 [., 3] before compression
VARIANT_EXTRAS = ("alt", "depth", "deletion_fraction")
SCAN = 1 << 20  # bases of a `covered` mask read at a time while finding covered runs
# SWMR needs the 1.10 file format; pinning it (not "latest") keeps files readable by HDF5 >= 1.10
LIBVER = ("v110", "v110")


def partial_path(out: str | os.PathLike) -> Path:
    """Where a run writes before the rename: `.<name>.partial` in the output's folder."""
    out = Path(out)
    return out.with_name(f".{out.name}.partial")


def covered_runs(covered: h5py.Dataset, start: int = 0, end: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends of the covered bases in [start, end) of a `covered` dataset, read SCAN bases at a
    time, so memory does not grow with the contig (a run across a scan's edge comes in two adjacent
    pieces, which IntervalSet joins)."""
    end = len(covered) if end is None else end
    starts, ends = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for lo in range(start, end, SCAN):
        s, e = runs(covered[lo:min(lo + SCAN, end)])
        starts.append(s + lo)
        ends.append(e + lo)
    return np.concatenate(starts), np.concatenate(ends)


@dataclass
class Predictions:
    """Per-base predictions for bases [start, end) of `contig` (0-based, half-open).

    covered bool [n]; probs float32 [n, C] (0 where not covered), columns named by `classes`;
    for variant files with reads also alt (uint8 ASCII, 0 = none), depth (uint16) and
    deletion_fraction (float32); attrs: the file's root attributes (JSON strings decoded).
    """
    contig: str
    start: int
    end: int
    covered: np.ndarray
    probs: np.ndarray
    classes: list[str]
    task: str
    alt: np.ndarray | None = None
    depth: np.ndarray | None = None
    deletion_fraction: np.ndarray | None = None
    attrs: dict = field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return self.end - self.start


_JSON_ATTRS = ("model", "contig_md5", "predict_config")


def _open_for_reading(path: Path) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as e:
        if "already open for write" not in str(e):
            raise
    # a writer killed mid-run (SWMR flag still set): open it anyway so the check names it incomplete
    return h5py.File(path, "r", swmr=True)


class PredictionsFile:
    """An open, checked, complete predictions file: `contigs` {name: length}, `attrs`, `task`, `classes`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._file = _open_for_reading(self.path)
        except FileNotFoundError:
            raise InputError(f"{self.path}: no such predictions file") from None
        except OSError as e:
            raise InputError(f"{self.path}: not a readable HDF5 file (truncated or not HDF5: {e})",
                             hint="an interrupted `genoformer predict` leaves no file at the final name; "
                                  "predict again") from None
        try:
            self.attrs = self._check()
        except BaseException:
            self._file.close()
            raise
        self.task = self.attrs["task"]
        self.contigs = {name: int(g.attrs["length"]) for name, g in self._file["contigs"].items()}
        first = next(iter(self._file["contigs"].values()), None)
        self.classes = [] if first is None else [str(c) for c in first[f"{self.task}/probs"].attrs["classes"]]

    def _check(self) -> dict:
        a = self._file.attrs
        if a.get("format") != FORMAT:
            raise InputError(f"{self.path}: not a genoformer predictions file (format attribute "
                             f"{a.get('format')!r}, expected {FORMAT!r})")
        version = int(a.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise InputError(f"{self.path}: predictions format_version {version} is not supported "
                             f"(this genoformer reads {FORMAT_VERSION})", hint="use the genoformer that wrote it")
        if not bool(a.get("complete", False)):
            raise InputError(f"{self.path}: incomplete predictions file (complete=False: the run that wrote "
                             "it did not finish)", hint="rerun `genoformer predict` (with --resume to continue)")
        if "contigs" not in self._file:
            raise InputError(f"{self.path}: predictions file has no /contigs group")
        attrs = {}
        for key, value in a.items():
            value = value.decode() if isinstance(value, bytes) else value
            value = value.item() if isinstance(value, np.generic) else value
            attrs[key] = json.loads(value) if key in _JSON_ATTRS and isinstance(value, str) else value
        return attrs

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> PredictionsFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def interval(self, region: str | Interval) -> Interval:
        """A region string (1-based, samtools style), contig name or Interval, checked against the file."""
        if isinstance(region, Interval):
            if region.contig not in self.contigs:
                return parse_region(region.contig, self.contigs, source=str(self.path))
            if region.end > self.contigs[region.contig]:
                raise RegionError(f"{self.path}: {region.to_region()} runs past the end of {region.contig} "
                                  f"({self.contigs[region.contig]:,} bp)")
            return region
        return parse_region(region, self.contigs, source=str(self.path))

    def covered_blocks(self, regions: Iterable[str | Interval], block: int) -> list[Interval]:
        """Pieces of at most `block` bases that hold exactly the covered bases inside `regions` (default:
        whole contigs), in file order. Reads only the `covered` masks, so a genome-wide file predicted over
        a few regions costs what those regions do."""
        regions = list(regions)
        wanted = IntervalSet(map(self.interval, regions)) if regions else \
            IntervalSet(Interval(c, 0, n) for c, n in self.contigs.items())
        found: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
        for iv in wanted:
            found.setdefault(iv.contig, []).append(covered_runs(self._file[f"contigs/{iv.contig}/covered"],
                                                                iv.start, iv.end))
        stretches = IntervalSet.from_arrays({c: tuple(map(np.concatenate, zip(*parts))) for c, parts in found.items()})
        return [Interval(iv.contig, a, min(a + block, iv.end)) for iv in stretches for a in range(iv.start, iv.end, block)]

    def read(self, region: str | Interval) -> Predictions:
        iv = self.interval(region)
        g = self._file[f"contigs/{iv.contig}"]
        s = slice(iv.start, iv.end)
        extras = {}
        if "variant/alt" in g:
            extras = {"alt": g["variant/alt"][s], "depth": g["variant/depth"][s],
                      "deletion_fraction": g["variant/deletion_fraction"][s].astype(np.float32)}
        return Predictions(iv.contig, iv.start, iv.end, covered=g["covered"][s],
                           probs=g[f"{self.task}/probs"][s].astype(np.float32), classes=self.classes,
                           task=self.task, attrs=self.attrs, **extras)


def open_predictions(path: str | os.PathLike) -> PredictionsFile:
    """Open a complete predictions file (InputError naming the file otherwise); use as a context manager."""
    return PredictionsFile(path)


def read_predictions(path: str | os.PathLike, region: str | Interval) -> Predictions:
    """Predictions for one region ("chr20:10,000,001-10,001,000", a contig name, or an Interval)."""
    with PredictionsFile(path) as f:
        return f.read(region)
