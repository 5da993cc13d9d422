"""SIGTERM (a scheduler cancelling the job) as SystemExit(143), delivered reliably.

Python runs a signal handler at the next bytecode of the main thread.  When that bytecode
belongs to a weakref callback or a `__del__`, the handler's SystemExit is swallowed ("Exception
ignored in ...") and the job would run on to the end.  So the handler also records the signal,
and every long loop calls `raise_if_terminated()` once per window, step or block.

Neither helps while the main thread sits inside one long C call (a forward pass over a huge
window: torch releases the GIL but no bytecode runs until the call returns), so the handler
also arms a watchdog thread: if the process is still alive GRACE_S seconds later, it ends it
with os._exit(143). The cleanup the main thread had not reached by then is what a SIGKILL
would skip too; outputs are written so that this never leaves one that looks complete.
"""
from __future__ import annotations

import os
import signal
import sys
import threading

EXIT_CODE = 143
GRACE_S = 0.8  # the normal path (cleanup, then interpreter exit) gets this long before the watchdog
_terminated = False
_default_unraisablehook = sys.unraisablehook


def _watchdog() -> None:
    threading.Event().wait(GRACE_S)
    try:
        os.write(2, b"error: terminated (SIGTERM)\n")
    finally:
        os._exit(EXIT_CODE)


def _on_sigterm(signum, frame) -> None:
    global _terminated
    if not _terminated:
        threading.Thread(target=_watchdog, name="sigterm-watchdog", daemon=True).start()
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
