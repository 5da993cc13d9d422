"""SIGTERM (a scheduler cancelling the job) as SystemExit(143), and SIGINT (Ctrl-C) as
KeyboardInterrupt, delivered reliably; and `deferred()`, a block that SIGINT/SIGTERM do not cut in two
(a training step's update, a checkpoint written on the way out).

Python runs a signal handler at the next bytecode of the main thread.  When that bytecode
belongs to a weakref callback or a `__del__`, the handler's exception is swallowed ("Exception
ignored in ...") and the job would run on to the end.  So the handlers also record the signal,
and every long loop calls `raise_if_terminated()` once per window, step or block.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

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


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Run the block whole: a SIGINT or SIGTERM arriving inside it is raised again as it ends (by the
    handler in force outside, which for install()'s handlers records it as well).

    Outside the main thread (where handlers cannot be set) the block runs unprotected.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            signal.raise_signal(pending[0])  # the handler in force outside the block takes it
