"""SIGTERM (a scheduler cancelling the job) as SystemExit(143), delivered reliably.

Python runs a signal handler at the next bytecode of the main thread.  When that bytecode
belongs to a weakref callback or a `__del__`, the handler's SystemExit is swallowed ("Exception
ignored in ...") and the job would run on to the end.  So the handler also records the signal,
and every long loop calls `raise_if_terminated()` once per window, step or block.
"""
from __future__ import annotations

import signal
import sys

EXIT_CODE = 143
_terminated = False
_default_unraisablehook = sys.unraisablehook


def _on_sigterm(signum, frame) -> None:
    global _terminated
    _terminated = True
    raise SystemExit(EXIT_CODE)


def _unraisablehook(unraisable) -> None:
    # our own swallowed SystemExit is handled by the next raise_if_terminated(): no traceback
    if _terminated and isinstance(unraisable.exc_value, SystemExit):
        return
    _default_unraisablehook(unraisable)


def install() -> None:
    """Make SIGTERM end the process with exit code 143 (call once, from the main thread)."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    sys.unraisablehook = _unraisablehook


def raise_if_terminated() -> None:
    """Raise SystemExit(143) if SIGTERM arrived but its handler's exception was lost."""
    if _terminated:
        raise SystemExit(EXIT_CODE)
