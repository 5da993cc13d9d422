"""Output files that appear complete or not at all (RELIABILITY.md §5).

`refuse_existing` is called before any work, so a run that would not be allowed to write its
output fails at once; `staged` hands out a temporary name beside the final one and renames it
onto the final name only when the block finishes without an error (fsynced file and folder).
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from genoformer.errors import OutputError

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


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, OutputError) and e.errno in _WRITE_ERRNOS:
            raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
        raise
    _fsync_dir(path.parent)


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write a small text file (a JSON report) atomically."""
    with staged(path) as tmp:
        tmp.write_text(text)


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
    _fsync_dir(path.parent)
