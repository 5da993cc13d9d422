"""Per-base predictions in HDF5 (format "genoformer-predictions", version 1; see docs/hdf5.md).

Layout: root attributes with provenance, and per contig `/contigs/<contig>` holding per-base
datasets over the whole contig (0-based index = position): `covered` bool [L], `<task>/probs`
float16 [L, C] and, for variant models that read a BAM, `variant/alt`, `variant/depth` and
`variant/deletion_fraction`. Datasets are chunked and gzip-compressed; chunks never written
are never stored, so a 100 kb region of a 248 Mb contig costs about what the region does.

Crash safety (RELIABILITY.md §5). `PredictionWriter` writes `.<name>.partial` beside the final
name in HDF5 SWMR mode (writes reach the file in an order that keeps it readable after a kill)
with a per-window `done` mask flushed after every batch, so `--resume` can continue it. Only a
finished file gets `complete = True` and is renamed onto the final name. Readers refuse
anything that is not a complete file of this format.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from genoformer.coords import Interval, parse_region
from genoformer.errors import InputError, OutputError, RegionError, UsageError

log = logging.getLogger(__name__)

FORMAT, FORMAT_VERSION = "genoformer-predictions", 1
CHUNK = 65_536  # bases per chunk: ~400 kB of float16 [., 3] before compression
VARIANT_EXTRAS = ("alt", "depth", "deletion_fraction")
_PROGRESS = "_progress"  # group of the partial file only: done mask and the run's plan
# SWMR needs the 1.10 file format; pinning it (not "latest") keeps files readable by HDF5 >= 1.10
_LIBVER = ("v110", "v110")
_CACHE = {"rdcc_nbytes": 8 << 20, "rdcc_nslots": 1_048_583}  # per dataset: a window's chunks stay in memory


def partial_path(out: str | os.PathLike) -> Path:
    """Where a run writes before the rename: `.<name>.partial` in the output's folder."""
    out = Path(out)
    return out.with_name(f".{out.name}.partial")


def _compressed(length: int, n_cols: int | None) -> dict:
    shape_tail = () if n_cols is None else (n_cols,)
    return {"chunks": (max(1, min(CHUNK, length)), *shape_tail), "compression": "gzip", "compression_opts": 4,
            "shuffle": True, "fillvalue": 0}


_WRITER = f"{socket.gethostname()}:{os.getpid()}"


def _refuse_live_writer(out: Path, partial: Path) -> None:
    """OutputError when another live `genoformer predict` on this host is writing `partial` (RELIABILITY F6)."""
    try:
        with h5py.File(partial, "r", swmr=True) as f:
            writer = str(f[_PROGRESS].attrs.get("writer", "")) if _PROGRESS in f else ""
    except OSError as e:
        if "lock" in str(e):  # HDF5 holds a lock while a writer creates the file
            raise OutputError(f"{out}: {partial.name} is locked by another process writing it",
                              hint="wait for it, or give another --out") from None
        return  # unreadable: a leftover, replaced
    host, _, pid = writer.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit() or int(pid) == os.getpid():
        return
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return  # that process is gone
    except OSError:
        cmdline = b"genoformer"  # no /proc to tell: assume it is the writer
    if b"genoformer" in cmdline:
        raise OutputError(f"{out}: another genoformer predict (PID {pid}) is writing {partial.name}",
                          hint="wait for it, or give another --out")


class PredictionWriter:
    """Writes one predictions file: create (or reopen for resume), write ranges, mark windows, finish.

    `contigs` maps each contig holding requested bases to its length; `attrs` are the root
    provenance attributes; `plan` (JSON) identifies the run so a resume can check it is the same.
    """

    def __init__(self, out: str | os.PathLike, *, task: str, classes: list[str], contigs: Mapping[str, int],
                 attrs: Mapping[str, object], plan: str, n_windows: int, variant_extras: bool,
                 resume: bool = False):
        self.out, self.partial = Path(out), partial_path(out)
        self.task, self.n_classes, self.variant_extras = task, len(classes), variant_extras
        self.resumed = False
        f = self._reopen(plan, n_windows) if resume and self.partial.exists() else None
        self.resumed = f is not None
        self._file = f if f is not None else self._create(task, classes, contigs, attrs, plan, n_windows)
        self._done = self._file[f"{_PROGRESS}/done"]
        self._file.swmr_mode = True
        self._names = ["covered", f"{task}/probs"] + [f"variant/{n}" for n in VARIANT_EXTRAS if variant_extras]
        self._contig, self._datasets = None, {}

    # -- opening ---------------------------------------------------------------------------

    def _create(self, task, classes, contigs, attrs, plan, n_windows) -> h5py.File:
        if self.partial.exists():
            _refuse_live_writer(self.out, self.partial)
            self.partial.unlink()  # a leftover of an interrupted run that is not resumed
        try:
            f = h5py.File(self.partial, "w", libver=_LIBVER, **_CACHE)
        except OSError as e:
            raise OutputError(f"{self.out}: cannot create {self.partial.name} in {self.partial.parent} ({e})",
                              hint="check that the output folder exists and is writable") from None
        try:
            for key, value in attrs.items():
                f.attrs[key] = value
            f.attrs.update({"format": FORMAT, "format_version": FORMAT_VERSION, "complete": False, "task": task})
            for name, length in contigs.items():
                g = f.create_group(f"contigs/{name}")
                g.attrs["length"] = int(length)
                g.create_dataset("covered", shape=(length,), dtype=bool, **_compressed(length, None))
                probs = g.create_dataset(f"{task}/probs", shape=(length, len(classes)), dtype=np.float16,
                                         **_compressed(length, len(classes)))
                probs.attrs["classes"] = list(classes)
                if self.variant_extras:
                    g.create_dataset("variant/alt", shape=(length,), dtype=np.uint8, **_compressed(length, None))
                    g.create_dataset("variant/depth", shape=(length,), dtype=np.uint16, **_compressed(length, None))
                    g.create_dataset("variant/deletion_fraction", shape=(length,), dtype=np.float16,
                                     **_compressed(length, None))
            progress = f.create_group(_PROGRESS)
            progress.attrs.update({"plan": plan, "writer": _WRITER})
            progress.create_dataset("done", shape=(n_windows,), dtype=bool,
                                    chunks=(min(max(n_windows, 1), 1 << 20),), fillvalue=False)
        except BaseException:
            f.close()
            self.partial.unlink(missing_ok=True)
            raise
        return f

    def _reopen(self, plan: str, n_windows: int) -> h5py.File | None:
        """The interrupted run's partial, reopened for writing; None when it is unreadable (start over)."""
        _refuse_live_writer(self.out, self.partial)
        try:  # a killed SWMR writer leaves its "open for write" flag set: read it as an SWMR reader
            old = h5py.File(self.partial, "r", swmr=True)
        except OSError as e:
            log.warning("%s: unreadable (%s); starting over", self.partial, e)
            return None
        with old:
            ok = _PROGRESS in old and "plan" in old[_PROGRESS].attrs and old[f"{_PROGRESS}/done"].shape == (n_windows,)
            if not ok:
                raise OutputError(f"{self.partial}: not a resumable genoformer predictions file",
                                  hint="delete it, or run again without --resume to start over")
            if old[_PROGRESS].attrs["plan"] != plan:
                old_plan, new_plan = json.loads(old[_PROGRESS].attrs["plan"]), json.loads(plan)
                differ = [k for k in sorted(set(old_plan) | set(new_plan)) if old_plan.get(k) != new_plan.get(k)]
                raise UsageError(f"{self.partial}: the interrupted run used a different {', '.join(differ)}; "
                                 "it cannot be resumed with these inputs",
                                 hint="give the same model, reference, BAM, regions and options, "
                                      "or drop --resume to start over")
            # copy into a fresh file (chunks are copied compressed), as the flag forbids reopening it for
            # writing; the copy stays open, so no reader opening the new partial can lock us out of it
            tmp = self.partial.with_name(f"{self.partial.name}-{os.getpid()}")
            new = None
            try:
                new = h5py.File(tmp, "w", libver=_LIBVER, **_CACHE)
                new.attrs.update(dict(old.attrs))
                for name in old:
                    old.copy(old[name], new, name=name)
                new[_PROGRESS].attrs["writer"] = _WRITER
                new.flush()
                os.replace(tmp, self.partial)
            except BaseException as e:
                if new is not None:
                    new.close()
                tmp.unlink(missing_ok=True)
                if isinstance(e, OSError):
                    raise OutputError(f"{self.partial}: cannot copy the interrupted run to resume it ({e})") from None
                raise
        return new

    # -- writing ---------------------------------------------------------------------------

    def done_mask(self) -> np.ndarray:
        """bool [n_windows]: windows already written (all False for a fresh run)."""
        return self._done[:]

    def write(self, contig: str, start: int, probs: np.ndarray, extras: Mapping[str, np.ndarray] | None = None):
        """Predictions for bases [start, start + len(probs)) of `contig`; marks them covered."""
        end = start + len(probs)
        if contig != self._contig:
            # the current contig's datasets stay open: closing one flushes its chunk cache, so each
            # write would recompress a chunk and append it to the file. Windows come contig by contig.
            self._contig = contig
            self._datasets = {n: self._file[f"contigs/{contig}/{n}"] for n in self._names}
        g = self._datasets
        g[f"{self.task}/probs"][start:end] = probs.astype(np.float16, copy=False)
        g["covered"][start:end] = True
        if self.variant_extras:
            for name in VARIANT_EXTRAS:
                g[f"variant/{name}"][start:end] = extras[name]

    def mark_done(self, windows: np.ndarray) -> None:
        """Flush the predictions written so far, then record their windows as done and flush again.

        Two flushes, so the done mask on disk never runs ahead of the data: a kill during the
        second leaves windows written but not marked, and a resume just writes them again.
        """
        self._file.flush()
        if len(windows):
            lo, hi = int(np.min(windows)), int(np.max(windows)) + 1
            block = self._done[lo:hi]
            block[np.asarray(windows) - lo] = True
            self._done[lo:hi] = block
        self._file.flush()

    def finish(self, final_attrs: Mapping[str, object], force: bool) -> Path:
        """Mark complete and rename onto the final name (atomically, fsynced).

        The data are copied into a fresh file first: each flush of the SWMR file rewrote the chunks
        it touched at a new place (the old copies stay as dead space), and the done mask and plan
        served only the resume. Chunks are copied compressed, so this costs about a read of the file.
        """
        self._file.close()
        final_tmp = self.partial.with_name(f"{self.partial.name}-final")
        try:
            with h5py.File(self.partial, "r") as old, h5py.File(final_tmp, "w", libver=_LIBVER) as new:
                new.attrs.update(dict(old.attrs))
                new.attrs.update(dict(final_attrs))
                old.copy(old["contigs"], new, name="contigs")
                new.attrs["complete"] = True
            with open(final_tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            if self.out.exists() and not force:
                raise OutputError(f"{self.out}: appeared while predicting; not overwritten",
                                  hint="add --force to replace it")
            os.replace(final_tmp, self.out)
        except BaseException as e:
            final_tmp.unlink(missing_ok=True)
            if isinstance(e, OSError) and not isinstance(e, OutputError):
                raise OutputError(f"{self.out}: cannot write the finished file ({e})") from None
            raise
        self.partial.unlink(missing_ok=True)
        dir_fd = os.open(self.out.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return self.out

    def abort(self, keep: bool) -> None:
        """Close after a failure; keep the partial (for --resume) or delete it. Never touches the final name."""
        with contextlib.suppress(Exception):
            self._file.close()
        if not keep:
            self.partial.unlink(missing_ok=True)


# ---------------------------------------------------------------------------------------------
# reading


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
