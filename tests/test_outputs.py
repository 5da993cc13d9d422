"""Atomic outputs: complete or absent, one error policy (OSError of the output -> OutputError, exit 4)."""
from __future__ import annotations

import errno
import os
import stat

import pytest

from genoformer.errors import OutputError
from genoformer.outputs import staged, staged_folder, write_bytes, write_text


def listing(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_write_bytes_and_text_replace_the_file_whole(tmp_path):
    path = tmp_path / "a.json"
    assert write_text(path, "old\n") == path and path.read_text() == "old\n"
    assert write_bytes(path, b"new\n") == path and path.read_bytes() == b"new\n"
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # not the temp file's private mode
    assert listing(tmp_path) == ["a.json"]


def test_a_missing_folder_is_an_output_error(tmp_path):
    with pytest.raises(OutputError, match="cannot write") as err:
        write_bytes(tmp_path / "no" / "a.json", b"x")
    assert err.value.exit_code == 4 and listing(tmp_path) == []


@pytest.mark.parametrize("failure,raised", [
    (OSError(errno.ENOSPC, "No space left on device"), OutputError),  # the output's file system
    (OSError(errno.EIO, "Input/output error"), OSError),  # may be an input read inside the block: not relabelled
    (KeyboardInterrupt(), KeyboardInterrupt),
])
def test_a_failed_staged_block_leaves_the_old_file(tmp_path, failure, raised):
    path = tmp_path / "out.txt"
    path.write_text("old")
    with pytest.raises(raised) as err:
        with staged(path) as tmp:
            tmp.write_text("half")
            raise failure
    assert type(err.value) is raised and path.read_text() == "old" and listing(tmp_path) == ["out.txt"]


def test_staged_folder_replaces_the_old_one_only_when_complete(tmp_path):
    final = tmp_path / "runs" / "step-1"  # parents are created
    with staged_folder(final) as tmp:
        (tmp / "a").write_text("1")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b").write_text("2")
    assert listing(final) == ["a", "sub"] and (final / "sub" / "b").read_text() == "2"
    for failure in (OSError(errno.EIO, "Input/output error"), KeyboardInterrupt()):
        with pytest.raises(OutputError if isinstance(failure, OSError) else KeyboardInterrupt):
            with staged_folder(final) as tmp:
                (tmp / "c").write_text("3")
                raise failure  # a folder's block writes only the output: any OSError is the output's
        assert listing(final) == ["a", "sub"] and listing(final.parent) == ["step-1"]
    with staged_folder(final) as tmp:
        (tmp / "c").write_text("3")
    assert listing(final) == ["c"] and listing(final.parent) == ["step-1"]
