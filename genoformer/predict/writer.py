"""Writing a predictions file (format: genoformer.io.predictions, docs/hdf5.md), crash-safe and resumable.

Crash safety (RELIABILITY.md §5). `PredictionWriter` writes `.<name>.partial` beside the final
name in HDF5 SWMR mode (writes reach the file in an order that keeps it readable after a kill)
with a per-window `done` mask flushed after every batch, so `--resume` can continue it. Only a
finished file gets `complete = True` and is renamed onto the final name (genoformer.outputs).
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from genoformer.errors import OutputError, UsageError
from genoformer.io.predictions import CHUNK, FORMAT, FORMAT_VERSION, LIBVER, VARIANT_EXTRAS, partial_path
from genoformer.outputs import close_hdf5, discard_hdf5, hdf5_output, hdf5_write_error, open_hdf5, staged

log = logging.getLogger(__name__)

_PROGRESS = "_progress"  # group of the partial file only: done mask and the run's plan
_CACHE = {"rdcc_nbytes": 8 << 20, "rdcc_nslots": 1_048_583}  # per dataset: a window's chunks stay in memory


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
        f = open_hdf5(self.partial, self.out, libver=LIBVER, **_CACHE)
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
        except BaseException as e:
            discard_hdf5(f)
            self.partial.unlink(missing_ok=True)
            raise hdf5_write_error(e, self.out) or e from None
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
            new = open_hdf5(tmp, self.out, libver=LIBVER, **_CACHE)
            try:
                new.attrs.update(dict(old.attrs))
                for name in old:
                    old.copy(old[name], new, name=name)
                new[_PROGRESS].attrs["writer"] = _WRITER
                new.flush()
                os.replace(tmp, self.partial)
            except BaseException as e:
                discard_hdf5(new)
                tmp.unlink(missing_ok=True)
                if isinstance(e, (OSError, RuntimeError)):
                    reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                    raise OutputError(f"{self.partial}: cannot copy the interrupted run to resume it "
                                      f"({reason})") from None
                raise
        return new

    # -- writing ---------------------------------------------------------------------------

    def done_mask(self) -> np.ndarray:
        """bool [n_windows]: windows already written (all False for a fresh run)."""
        return self._done[:]

    @contextlib.contextmanager
    def _writing(self):
        """A write or flush of the partial that fails for lack of space (HDF5 may say so only at a flush)
        discards it at once, as closing it normally would crash (genoformer.outputs), and is OutputError."""
        try:
            yield
        except (OSError, RuntimeError) as e:
            error = hdf5_write_error(e, self.out)
            if error is None:
                raise
            discard_hdf5(self._file)
            self.partial.unlink(missing_ok=True)
            raise error from None

    def write(self, contig: str, start: int, probs: np.ndarray, extras: Mapping[str, np.ndarray] | None = None):
        """Predictions for bases [start, start + len(probs)) of `contig`; marks them covered."""
        with self._writing():
            self._write(contig, start, probs, extras)

    def _write(self, contig, start, probs, extras) -> None:
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
        with self._writing():
            self._file.flush()
            if len(windows):
                lo, hi = int(np.min(windows)), int(np.max(windows)) + 1
                block = self._done[lo:hi]
                block[np.asarray(windows) - lo] = True
                self._done[lo:hi] = block
            self._file.flush()

    def finish(self, final_attrs: Mapping[str, object], force: bool) -> Path:
        """Mark complete and rename onto the final name (atomically, fsynced: genoformer.outputs.staged).

        The data are copied into a fresh file first: each flush of the SWMR file rewrote the chunks
        it touched at a new place (the old copies stay as dead space), and the done mask and plan
        served only the resume. Chunks are copied compressed, so this costs about a read of the file.
        """
        close_hdf5(self._file, self.out)
        with staged(self.out) as final_tmp:
            with h5py.File(self.partial, "r") as old, hdf5_output(final_tmp, self.out, libver=LIBVER) as new:
                new.attrs.update(dict(old.attrs))
                new.attrs.update(dict(final_attrs))
                old.copy(old["contigs"], new, name="contigs")
                new.attrs["complete"] = True
            if self.out.exists() and not force:
                raise OutputError(f"{self.out}: appeared while predicting; not overwritten",
                                  hint="add --force to replace it")
        self.partial.unlink(missing_ok=True)
        return self.out

    def abort(self, keep: bool) -> None:
        """Close after a failure; keep the partial (for --resume) or delete it. Never touches the final name."""
        if keep:
            try:
                close_hdf5(self._file, self.out)
                return
            except OutputError as e:
                log.warning("%s; %s cannot be kept for --resume", e, self.partial)
        discard_hdf5(self._file)
        self.partial.unlink(missing_ok=True)
