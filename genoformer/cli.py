"""The `genoformer` command: a thin Click layer over the Python API.

Subcommands are imported only when invoked, so `genoformer --help` and `info`
never import torch.  Every GenoformerError becomes one line on stderr and the
exit code of the contract (see README, "Exit codes").
"""
from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback

import click

from genoformer import __version__
from genoformer import interrupt
from genoformer.allocator import mmap_large_tensors
from genoformer.errors import GenoformerError
from genoformer.outputs import hdf5_unusable

# name -> "module:attribute" of the click.Command
COMMANDS = {
    "attribute": "genoformer.commands.attribute:attribute",
    "buckets": "genoformer.commands.buckets:buckets",
    "calibrate": "genoformer.commands.calibrate:calibrate",
    "evaluate": "genoformer.commands.evaluate:evaluate",
    "export": "genoformer.commands.export:export",
    "info": "genoformer.commands.info:info",
    "merge": "genoformer.commands.merge:merge",
    "predict": "genoformer.commands.predict:predict",
    "score-variants": "genoformer.commands.score_variants:score_variants",
    "simulate": "genoformer.commands.simulate:simulate",
    "train": "genoformer.commands.train:train",
}

EXIT_CODES_HELP = """\b
Exit codes: 0 success, 1 internal error (a bug: please report),
2 usage error, 3 invalid input data, 4 output/environment error,
5 numerical failure, 130/143 interrupted (SIGINT/SIGTERM)."""


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="genoformer")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
def cli(verbose: int) -> None:
    """Long-range deep learning on genomes: Reformer models over k-mer tokens."""
    level = logging.WARNING - 10 * min(verbose, 2) if verbose else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr, format="%(levelname)s: %(message)s")
    if verbose < 2:
        # htslib writes its own lines straight to stderr; our errors already name the file and
        # the problem in one line, so its chatter is shown only with -vv
        import pysam

        pysam.set_verbosity(0)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the group and map exceptions to the exit-code contract."""
    interrupt.install()
    mmap_large_tensors()
    try:
        _main(argv)
    except SystemExit as exit_:
        if exit_.code == interrupt.EXIT_CODE:  # SIGTERM, its cleanup done on the way here
            interrupt.exit_now()
        raise


def _main(argv: list[str] | None) -> None:
    try:
        cli.main(args=argv, prog_name="genoformer", standalone_mode=False)
    except GenoformerError as err:
        click.echo(f"error: {err}", err=True)
        if err.hint:
            click.echo(f"hint: {err.hint}", err=True)
        _exit(err.exit_code)
    except (click.exceptions.Abort, KeyboardInterrupt):  # click turns Ctrl-C into Abort
        click.echo("error: interrupted", err=True)
        interrupt.exit_now(interrupt.SIGINT_EXIT_CODE)
    except click.ClickException as err:
        err.show()
        _exit(err.exit_code)
    except click.exceptions.Exit as err:
        _exit(err.exit_code)
    except BrokenPipeError:
        _exit(0)
    except SystemExit as err:  # SIGTERM (interrupt.py)
        if hdf5_unusable():
            _exit(err.code if isinstance(err.code, int) else 1)
        raise
    except Exception as err:  # a bug: keep the traceback, but in a file
        import tempfile

        with tempfile.NamedTemporaryFile("w", prefix="genoformer-crash-", suffix=".log",
                                         delete=False) as log:
            traceback.print_exc(file=log)
        click.echo(f"error: internal error ({type(err).__name__}: {err}); "
                   f"traceback in {log.name}; please report it", err=True)
        _exit(1)
    _exit(0)


def _exit(code: int) -> None:
    """sys.exit(code); but when an HDF5 file could not be closed after a write error, end the process
    at once (outputs are already cleaned up), as HDF5's own cleanup at exit would crash on that file."""
    if hdf5_unusable():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
