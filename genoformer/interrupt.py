"""SIGTERM (a scheduler cancelling the job) as SystemExit(143), and SIGINT (Ctrl-C) as
KeyboardInterrupt, delivered reliably.

Python runs a signal handler at the next bytecode of the main thread.  When that bytecode
belongs to a weakref callback or a `__del__`, the handler's exception is swallowed ("Exception
ignored in ...") and the job would run on to the end.  So the handlers also record the signal,
and every long loop calls `raise_if_terminated()` once per window, step or block.
"""
from __future__ import annotations

import signal
import sys

EXIT_CODE = 143
_terminated = False  # SIGTERM arrived
_interrupted = False  # SIGINT arrived
_default_unraisablehook = sys.unraisablehook


def _on_sigterm(signum, frame) -> None:
    global _terminated
    _terminated = True
    raise SystemExit(EXIT_CODE)


def _on_sigint(signum, frame) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


def _unraisablehook(unraisable) -> None:
    # our own swallowed exceptions are raised again by the next raise_if_terminated(): no traceback
    if (_terminated and isinstance(unraisable.exc_value, SystemExit)) or \
            (_interrupted and isinstance(unraisable.exc_value, KeyboardInterrupt)):
        return
    _default_unraisablehook(unraisable)


def install() -> None:
    """Make SIGTERM end the process with exit code 143, and SIGINT raise KeyboardInterrupt even where
    Python swallows it (call once, from the main thread)."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, _on_sigint)
    sys.unraisablehook = _unraisablehook


def raise_if_terminated() -> None:
    """Raise SystemExit(143) if SIGTERM arrived, KeyboardInterrupt if SIGINT did, but its handler's exception
    was lost."""
    if _terminated:
        raise SystemExit(EXIT_CODE)
    if _interrupted:
        raise KeyboardInterrupt
