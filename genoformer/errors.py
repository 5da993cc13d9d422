"""Exception classes that carry the exit codes of the CLI contract.

0 success, 1 bug, 2 usage, 3 bad input data, 4 output/environment, 5 numerical failure.
The library raises these; only `cli.main` turns them into exit codes and one-line messages.
"""
from __future__ import annotations


class GenoformerError(Exception):
    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class UsageError(GenoformerError, ValueError):
    """Bad option values, config keys or region syntax."""
    exit_code = 2


class InputError(GenoformerError, ValueError):
    """An input file or its content is missing, malformed or inconsistent."""
    exit_code = 3


class FastaError(InputError):
    pass


class AlignmentError(InputError):
    pass


class VariantError(InputError):
    pass


class RegionError(InputError):
    """A region that parses but does not fit the reference (unknown contig, past the end)."""


class TrackError(InputError):
    pass


class CheckpointError(InputError):
    pass


class OutputError(GenoformerError, OSError):
    """The output exists, cannot be written, or the environment is unusable."""
    exit_code = 4


class NumericalError(GenoformerError, ArithmeticError):
    exit_code = 5


def refuse_unknown(values, known, what: str, shown=None) -> None:
    """UsageError naming the first of `values`' keys not in `known` ("unknown {what} 'x'"), with the
    known names (`shown`, default `known`) as its hint: every config's from_dict says it the same way."""
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise UsageError(f"unknown {what} {unknown[0]!r}",
                         hint=f"known: {', '.join(sorted(known if shown is None else shown))}")
