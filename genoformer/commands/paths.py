"""The Click types of the paths commands read: a missing input is bad input data (exit 3), said once here.

Click's own `Path(exists=True)` reports a missing file as a usage error (exit 2); the contract
(README, "Exit codes") gives inputs their own code, so every command reads its files through these.
"""
from __future__ import annotations

import os
from pathlib import Path

import click

from genoformer.errors import InputError


class InputPath(click.Path):
    """An existing, readable input: a file (or, with dir_okay, a folder such as a run folder).

    A path that is missing, of the wrong kind or unreadable raises InputError naming it and the option.
    """

    def __init__(self, *, dir_okay: bool = False, file_okay: bool = True, path_type: type | None = None):
        super().__init__(exists=True, dir_okay=dir_okay, file_okay=file_okay, readable=True, path_type=path_type)

    def convert(self, value, param, ctx):
        path = Path(os.fsdecode(value))
        where = "" if param is None else \
            f" ({param.opts[0] if isinstance(param, click.Option) else param.human_readable_name})"
        if not path.exists():
            raise InputError(f"{path}: no such {'file' if self.file_okay else 'folder'}{where}")
        if path.is_dir() and not self.dir_okay:
            raise InputError(f"{path}: is a folder, expected a file{where}")
        if not path.is_dir() and not self.file_okay:
            raise InputError(f"{path}: is a file, expected a folder{where}")
        if not os.access(path, os.R_OK):
            raise InputError(f"{path}: cannot read it (permission denied){where}")
        return super().convert(value, param, ctx)


class ModelPath(InputPath):
    """--model: a run folder, one of its checkpoint folders, or the name of a model shipped with genoformer."""

    def __init__(self):
        super().__init__(dir_okay=True)

    def convert(self, value, param, ctx):
        from genoformer import pretrained

        shipped = pretrained.locate(str(value)) if not Path(os.fsdecode(value)).exists() else None
        if shipped is not None:
            return str(shipped)
        try:
            return super().convert(value, param, ctx)
        except InputError as e:
            known = pretrained.names()
            raise InputError(f"{e} and no shipped model has that name",
                             hint=f"shipped models: {', '.join(known)}" if known else None) from None


INPUT_FILE = InputPath()
INPUT_FILE_PATH = InputPath(path_type=Path)
RUN_OR_CHECKPOINT = ModelPath()
