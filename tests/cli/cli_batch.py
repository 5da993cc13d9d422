"""Run many `genoformer` command lines in one process (torch-free commands: export, merge, info).

Usage: python cli_batch.py JOBS.json, where JOBS.json is a list of argument lists. Prints one JSON
line per job: {"code": exit code, "stderr": what the command wrote on stderr}. One process spares
the interpreter start per case, so a fuzz run of many cases takes seconds; a crash (a segfault)
still shows, as this process's own exit status, to the test that started it.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import sys

from genoformer.cli import main


def run(args: list[str]) -> dict:
    err = io.StringIO()
    logging.root.handlers.clear()  # cli.main's basicConfig binds to this job's stderr
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            main(args)
            code = 0
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
    return {"code": code, "stderr": err.getvalue()}


if __name__ == "__main__":
    with open(sys.argv[1]) as fh:
        jobs = json.load(fh)
    for job in jobs:
        print(json.dumps(run(job)), flush=True)
