"""Per-base predictions in HDF5 (format "genoformer-predictions", version 1; see docs/hdf5.md).

Layout: root attributes with provenance, and per contig `/contigs/<contig>` holding per-base
datasets over the whole contig (0-based index = position): `covered` bool [L], `<task>/probs`
float16 [L, C] and, for variant models that read a BAM, `variant/alt`, `variant/depth` and
`variant/deletion_fraction`. Datasets are chunked and gzip-compressed; chunks never written
are never stored, so a 100 kb region of a 248 Mb contig costs about what the region does.

This module holds the format's constants and its reader; genoformer.predict.writer writes it
(crash safety, RELIABILITY.md §5: a run writes `partial_path(out)` and only a finished file gets
`complete = True` and is renamed onto the final name). Readers refuse anything that is not a
complete file of this format: `check_layout` (shared with merge) checks every group, dataset,
shape and dtype up front, a chunk that does not decode names its dataset, and values that are
not probabilities are refused where they are read (InputError, exit 3, in every case).
"""
from __future__ import annotations

import contextlib
import json
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from genoformer.coords import Interval, IntervalSet, parse_region, runs
from genoformer.errors import InputError, RegionError
from genoformer.interrupt import raise_if_terminated

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
        raise_if_terminated()
        s, e = runs(covered[lo:min(lo + SCAN, end)])
        starts.append(s + lo)
        ends.append(e + lo)
    return np.concatenate(starts), np.concatenate(ends)


def _members(group: h5py.Group, kind: type) -> dict[str, h5py.Dataset | h5py.Group]:
    """Datasets or groups below `group` by relative path (e.g. "variant/probs")."""
    found = {}

    def visit(name, obj):  # visititems stops at the first callback that returns a value
        if isinstance(obj, kind):
            found[name] = obj

    group.visititems(visit)
    return found


def datasets(group: h5py.Group) -> dict[str, h5py.Dataset]:
    return _members(group, h5py.Dataset)


def groups(group: h5py.Group) -> dict[str, h5py.Group]:
    return _members(group, h5py.Group)


Layout = tuple[tuple[int, ...], str]  # a dataset's shape after the base axis, and its dtype


def check_layout(path: Path, fh: h5py.File, task: str) -> tuple[dict[str, int], dict[str, Layout]]:
    """The contig lengths and dataset layouts of an open predictions file, after checking its structure.

    Every /contigs/<contig> group needs a `length` and: `covered` bool [length]; `<task>/probs`
    float [length, C] with C `classes` names; all of variant/alt, depth, deletion_fraction
    ([length] each) or none. Every dataset has one row per base and the same layout on every
    contig. InputError naming the file and the dataset otherwise.
    """
    with structure_read(path):
        return _check_layout(path, fh, task)


def _check_layout(path: Path, fh: h5py.File, task: str) -> tuple[dict[str, int], dict[str, Layout]]:
    contigs = fh.get("contigs")
    if not isinstance(contigs, h5py.Group):
        raise InputError(f"{path}: predictions file has no /contigs group")
    expected = {"covered": ((), "b"), f"{task}/probs": (None, "f"), "variant/alt": ((), "u"),
                "variant/depth": ((), "u"), "variant/deletion_fraction": ((), "f")}
    lengths: dict[str, int] = {}
    layouts: dict[str, Layout] = {}
    for contig, group in contigs.items():
        where = f"{path}: /contigs/{contig}"
        length = group.attrs.get("length") if isinstance(group, h5py.Group) else None
        if not isinstance(length, (int, np.integer)) or isinstance(length, (bool, np.bool_)) or length < 0:
            raise InputError(f"{where} is not a contig group with a length attribute")
        lengths[contig] = length = int(length)
        found = datasets(group)
        extras = [f"variant/{n}" for n in VARIANT_EXTRAS]
        missing = [n for n in ("covered", f"{task}/probs") if n not in found]
        if any(n in found for n in extras):
            missing += [n for n in extras if n not in found]
        if missing:
            raise InputError(f"{where}: missing dataset {', '.join(missing)}")
        for name, ds in found.items():
            shape, kind = expected.get(name, (None, None))
            if ds.shape[:1] != (length,) or (shape is not None and ds.shape[1:] != shape):
                want = f"[{length:,}]" if shape == () else f"{length:,} rows"
                raise InputError(f"{where}/{name} has shape {list(ds.shape)}, expected {want} (one per base)")
            if kind is not None and ds.dtype.kind != kind:
                raise InputError(f"{where}/{name} has dtype {ds.dtype}, expected "
                                 f"{ {'b': 'bool', 'f': 'a float', 'u': 'an unsigned integer'}[kind]}")
            layout = (tuple(ds.shape[1:]), ds.dtype.str)
            if layouts.setdefault(name, layout) != layout:
                raise InputError(f"{where}/{name} has shape {ds.shape[1:]} {ds.dtype} but "
                                 f"{layouts[name][0]} {layouts[name][1]} on another contig")
        probs = found[f"{task}/probs"]
        classes = probs.attrs.get("classes")
        if probs.ndim != 2 or classes is None or np.ndim(classes) != 1 or len(classes) != probs.shape[1]:
            names = "none" if classes is None else ", ".join(map(str, np.ravel(classes)))
            raise InputError(f"{where}/{task}/probs has shape {list(probs.shape)} but its classes attribute "
                             f"names {names}", hint="one column per class name")
    return lengths, layouts


def _first_line(e: BaseException) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


@contextlib.contextmanager
def structure_read(path: str | os.PathLike) -> Iterator[None]:
    """h5py failing to read attributes, groups or dataset headers (a damaged file: bad checksums,
    addresses, messages) is InputError naming the file."""
    try:
        yield
    except InputError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
        raise InputError(f"{path}: cannot read its attributes, groups and datasets ({_first_line(e)})",
                         hint="the file is damaged; predict it again") from None


@contextlib.contextmanager
def reading(path: str | os.PathLike, contig: str, name: str) -> Iterator[None]:
    """A read of /contigs/<contig>/<name> that fails (a chunk that does not decode) is InputError naming it."""
    try:
        yield
    except (OSError, RuntimeError, zlib.error) as e:
        raise InputError(f"{path}: cannot read /contigs/{contig}/{name} ({_first_line(e)})",
                         hint="the file is damaged; predict it again") from None


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
            with structure_read(self.path):
                self.attrs = self._check()
                self.task = self.attrs["task"]
                first = next(iter(self._file["contigs"].values()), None)
                self.classes = [] if first is None else [str(c) for c in first[f"{self.task}/probs"].attrs["classes"]]
        except BaseException:
            self._file.close()
            raise

    def _check(self) -> dict:
        a = self._file.attrs
        if a.get("format") != FORMAT:
            raise InputError(f"{self.path}: not a genoformer predictions file (format attribute "
                             f"{a.get('format')!r}, expected {FORMAT!r})")
        version = a.get("format_version", -1)
        if not isinstance(version, (int, np.integer)) or version != FORMAT_VERSION:
            raise InputError(f"{self.path}: predictions format_version {version} is not supported "
                             f"(this genoformer reads {FORMAT_VERSION})", hint="use the genoformer that wrote it")
        if not bool(a.get("complete", False)):
            raise InputError(f"{self.path}: incomplete predictions file (complete=False: the run that wrote "
                             "it did not finish)", hint="rerun `genoformer predict` (with --resume to continue)")
        task = a.get("task")
        task = task.decode() if isinstance(task, bytes) else task
        if not isinstance(task, str) or not task:
            raise InputError(f"{self.path}: predictions file has no task attribute")
        self.contigs, _ = check_layout(self.path, self._file, task)
        attrs = {}
        for key, value in a.items():
            value = value.decode() if isinstance(value, bytes) else value
            value = value.item() if isinstance(value, np.generic) else value
            try:
                attrs[key] = json.loads(value) if key in _JSON_ATTRS and isinstance(value, str) else value
            except ValueError:
                raise InputError(f"{self.path}: attribute {key} is not valid JSON") from None
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
            with reading(self.path, iv.contig, "covered"):
                found.setdefault(iv.contig, []).append(covered_runs(self._file[f"contigs/{iv.contig}/covered"],
                                                                    iv.start, iv.end))
        stretches = IntervalSet.from_arrays({c: tuple(map(np.concatenate, zip(*parts))) for c, parts in found.items()})
        return [Interval(iv.contig, a, min(a + block, iv.end)) for iv in stretches for a in range(iv.start, iv.end, block)]

    def read(self, region: str | Interval) -> Predictions:
        iv = self.interval(region)
        g = self._file[f"contigs/{iv.contig}"]

        def get(name: str, dtype=None) -> np.ndarray:
            with reading(self.path, iv.contig, name):
                values = g[name][iv.start:iv.end]
            return values if dtype is None else values.astype(dtype)

        extras = {}
        if "variant/alt" in g:
            extras = {"alt": get("variant/alt"), "depth": get("variant/depth"),
                      "deletion_fraction": get("variant/deletion_fraction", np.float32)}
        p = Predictions(iv.contig, iv.start, iv.end, covered=get("covered"),
                        probs=get(f"{self.task}/probs", np.float32), classes=self.classes,
                        task=self.task, attrs=self.attrs, **extras)
        self._check_values(p)
        return p

    def _check_values(self, p: Predictions) -> None:
        """InputError at the first covered base whose probabilities (or deletion fraction) are not in [0, 1].

        predict never writes such a value (it stops at non-finite outputs), so one means the file is
        damaged or was not written by it: bad input (exit 3), as non-finite checkpoint weights are.
        """
        values = {f"{self.task}/probs": p.probs}
        if p.deletion_fraction is not None:
            values["variant/deletion_fraction"] = p.deletion_fraction[:, None]
        for name, v in values.items():
            bad = p.covered & ~((v >= 0) & (v <= 1)).all(1)  # NaN fails both comparisons
            if bad.any():
                i = int(np.argmax(bad))
                shown = ", ".join(f"{x:g}" for x in v[i])
                raise InputError(f"{self.path}: /contigs/{p.contig}/{name} at {p.contig}:{p.start + i + 1:,} is "
                                 f"{shown}, not a probability in [0, 1]",
                                 hint="the file is damaged or was not written by genoformer predict; predict again")


def open_predictions(path: str | os.PathLike) -> PredictionsFile:
    """Open a complete predictions file (InputError naming the file otherwise); use as a context manager."""
    return PredictionsFile(path)


def read_predictions(path: str | os.PathLike, region: str | Interval) -> Predictions:
    """Predictions for one region ("chr20:10,000,001-10,001,000", a contig name, or an Interval)."""
    with PredictionsFile(path) as f:
        return f.read(region)
