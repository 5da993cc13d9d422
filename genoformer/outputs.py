"""Outputs that appear complete or not at all (RELIABILITY.md §5): every atomic write goes through here.

`refuse_existing` is called before any work, so a run that would not be allowed to write its
output fails at once. `staged` hands out a temporary name beside the final one and renames it
onto the final name only when the block finishes without an error (fsynced file and folder);
`write_bytes` / `write_text` write a whole file that way, `staged_text` adds bgzip + tabix, and
`staged_folder` does the same for a folder of files (a checkpoint, a simulated example).
`hdf5_output` opens an HDF5 file to write inside such a block (see below for why it is special).

One error policy: an OSError of the output becomes OutputError (exit 4) naming the final path,
and on any error, KeyboardInterrupt included, the temporary file or folder is removed and the
final path is left as it was. Creating, fsyncing and renaming the temporary are the output's
own steps; inside a `staged` block, which may also read inputs, only errors of the output's file
system (no space, quota, read-only, permission, file too large) count as the output's; the
blocks of `write_bytes`, `write_text` and `staged_folder` write nothing but the output.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from genoformer.errors import OutputError

if TYPE_CHECKING:
    import h5py

# errors of the output's file system (not of an input read inside the block): exit 4
_WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EFBIG, errno.EPERM}


def refuse_existing(path: str | os.PathLike, force: bool) -> Path:
    """The output path, checked: its folder exists, and it does not exist unless `force`."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: is a folder, expected an output file name")
    if path.exists() and not force:
        raise OutputError(f"{path}: already exists; not overwritten", hint="add --force to replace it")
    if not path.parent.is_dir():
        raise OutputError(f"{path}: folder {path.parent} does not exist")
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path) -> None:
    """fsync a file, or a folder (its entries)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _cannot_write(path: Path, e: BaseException) -> OutputError:
    code = _errno(e)
    reason = os.strerror(code) if code else str(e).splitlines()[0] if str(e) else type(e).__name__
    return OutputError(f"{path}: cannot write ({reason})")


def _errno(e: BaseException) -> int | None:
    """The errno of a failed write: OSError carries it; h5py's RuntimeError of a failed flush only quotes
    HDF5's message ("... errno = 28, error message = 'No space left on device' ...")."""
    if isinstance(e, OSError) and e.errno:
        return e.errno
    found = re.search(r"\berrno = (\d+)", str(e)) if isinstance(e, (OSError, RuntimeError)) else None
    return int(found.group(1)) if found else None


def _is_write_error(e: BaseException) -> bool:
    return not isinstance(e, OutputError) and _errno(e) in _WRITE_ERRNOS


@contextlib.contextmanager
def staged(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temp path in `path`'s folder; on success fsync it and rename it onto `path`.

    `suffix` ends the temp name (tools such as tabix choose behaviour by extension). On any
    error, KeyboardInterrupt included, the temp file is removed and `path` is left untouched.
    """
    path = Path(path)
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.partial-", suffix=suffix)
    except OSError as e:
        raise OutputError(f"{path}: cannot write in {path.parent} ({e.strerror or e})") from None
    os.close(fd)
    tmp = Path(name)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the output gets the usual permissions
    with _removed_on_error(tmp, path, lambda e: e.errno in _WRITE_ERRNOS):
        yield tmp
    with _removed_on_error(tmp, path, lambda e: True):
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)


@contextlib.contextmanager
def _removed_on_error(tmp: Path, path: Path, of_output) -> Iterator[None]:
    """Remove `tmp` (a file or folder) on any error; an OSError for which `of_output(e)` holds becomes OutputError."""
    try:
        yield
    except BaseException as e:
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, OutputError) and of_output(e):
            raise _cannot_write(path, e) from None
        if _is_write_error(e):  # h5py reports a failed flush as RuntimeError
            raise _cannot_write(path, e) from None
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write a whole file atomically (fsynced, renamed into place); returns its path."""
    with staged(path) as tmp, _removed_on_error(tmp, Path(path), lambda e: True):
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a whole text file (a JSON report, a config) atomically; returns its path."""
    return write_bytes(path, text.encode())


@contextlib.contextmanager
def staged_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder beside `path` (its parents are created); on success fsync every file in it
    and rename it onto `path`.

    A folder already at `path` is renamed aside first and removed only once the new one is in place.
    On any error the temp folder is removed and `path` is left untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.partial-"))
    except OSError as e:
        raise OutputError(f"{path}: cannot create a folder in {path.parent} ({e.strerror or e})") from None
    with _removed_on_error(tmp, path, lambda e: True):
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it private; the output gets the usual permissions
        for folder, _, files in os.walk(tmp, topdown=False):
            for name in files:
                _fsync(Path(folder, name))
            _fsync(Path(folder))
        aside = tmp.with_name(f"{tmp.name}.old") if path.exists() else None
        if aside:
            os.rename(path, aside)  # os.replace cannot replace a folder that holds files
        try:
            os.rename(tmp, path)
        except BaseException:
            if aside:
                os.rename(aside, path)  # the old folder back in place
            raise
        _fsync(path.parent)
    if aside:
        shutil.rmtree(aside, ignore_errors=True)


@contextlib.contextmanager
def staged_text(path: str | os.PathLike, preset: str, suffix: str) -> Iterator[Path]:
    """Yield a plain-text temp path; on success publish it at `path`, bgzipped and tabix-indexed
    (`preset` "vcf" or "bed") when `path` ends in .gz, else as it is.

    The data file is renamed first and its index right after (an old index at the final name is
    removed before), so a reader never pairs new data with an old index.
    """
    path = Path(path)
    if not path.name.endswith(".gz"):
        with staged(path, suffix) as tmp:
            yield tmp
        return
    import pysam

    index = Path(f"{path}.tbi")
    with staged(path, suffix + ".gz") as tmp_gz:
        plain = tmp_gz.with_name(tmp_gz.name[:-3])
        tmp_index = Path(f"{tmp_gz}.tbi")
        try:
            yield plain
            pysam.tabix_index(str(plain), preset=preset, force=True)  # bgzips plain into tmp_gz, then indexes
            index.unlink(missing_ok=True)
        except BaseException:
            plain.unlink(missing_ok=True)
            tmp_index.unlink(missing_ok=True)
            raise
    os.replace(tmp_index, index)
    _fsync(path.parent)


# -- HDF5 ------------------------------------------------------------------------------------
# HDF5 caches chunks and metadata, so a full disk surfaces only when they are written: at a flush,
# or at close. A close that fails leaves HDF5 in a state where closing again, or the close of
# every open file at interpreter exit, crashes the process (SIGSEGV). So a file is always flushed
# before it is closed, and one whose flush or write failed is discarded: its descriptor is pointed
# at an anonymous in-memory file, so the close that follows writes (and truncates) there and
# succeeds; the file on disk is removed anyway. A failed flush of HDF5's metadata cache can leave
# even that close failing ("slist already enabled"); such a file is never touched again, and
# `hdf5_unusable()` tells the CLI to end the process without HDF5's exit-time cleanup, which
# would crash on it (temporary files are removed before that).

_broken: set[int] = set()  # id() of the FileIDs of discarded files that could not be closed


def hdf5_unusable() -> bool:
    """Whether a discarded HDF5 file could not be closed: the process must end without HDF5's cleanup."""
    return bool(_broken)


def _sink() -> int:
    """A descriptor that takes writes and truncation and keeps nothing on disk."""
    if hasattr(os, "memfd_create"):  # Linux
        return os.memfd_create("genoformer-discarded-hdf5")
    return os.open(os.devnull, os.O_WRONLY)  # elsewhere a truncate fails, and the file counts as broken


@contextlib.contextmanager
def hdf5_output(tmp: str | os.PathLike, final: str | os.PathLike, **kwargs) -> Iterator[h5py.File]:
    """An h5py.File created at `tmp` (the staged temp of `final`), flushed and closed when the block ends.

    An error of the output's file system, while writing, flushing or closing, becomes OutputError
    naming `final`; on any error the file is discarded (closed without writing), so nothing retries it.
    """
    f = open_hdf5(tmp, final, **kwargs)
    try:
        yield f
    except BaseException as e:
        discard_hdf5(f)
        if _is_write_error(e):
            raise _cannot_write(Path(final), e) from None
        raise
    close_hdf5(f, final)


def open_hdf5(tmp: str | os.PathLike, final: str | os.PathLike, **kwargs) -> h5py.File:
    """h5py.File(tmp, "w", **kwargs); a failure to create it is OutputError naming `final`."""
    import h5py

    try:
        return h5py.File(tmp, "w", **kwargs)
    except OSError as e:
        raise OutputError(f"{final}: cannot create {Path(tmp).name} in {Path(tmp).parent} "
                          f"({os.strerror(e.errno) if e.errno else str(e).splitlines()[0]})") from None


def close_hdf5(f: h5py.File, final: str | os.PathLike) -> None:
    """Flush, then close `f`: a failed flush (no space, quota) discards the file and raises OutputError."""
    if id(f.id) in _broken or not f.id.valid:
        return
    try:
        f.flush()
    except BaseException as e:
        discard_hdf5(f)
        if isinstance(e, (OSError, RuntimeError)):
            raise _cannot_write(Path(final), e) from None
        raise
    f.close()


def discard_hdf5(f: h5py.File) -> None:
    """Close `f` without writing what it still caches (its content is being thrown away)."""
    if id(f.id) in _broken:
        return  # touching it again may crash
    try:
        if not f.id.valid:
            return
        if f.driver == "sec2":  # its handle is the file descriptor
            fd = f.id.get_vfd_handle()
            sink = _sink()
            try:
                os.dup2(sink, fd)
            finally:
                os.close(sink)
        f.close()
    except Exception:
        _broken.add(id(f.id))


def hdf5_write_error(e: BaseException, final: str | os.PathLike) -> OutputError | None:
    """The OutputError naming `final` for `e`, when `e` is an error of the output's file system; else None."""
    return _cannot_write(Path(final), e) if _is_write_error(e) else None
