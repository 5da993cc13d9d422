"""SIGTERM (a scheduler cancelling the job) as SystemExit(143), and SIGINT (Ctrl-C) as
KeyboardInterrupt, delivered reliably; and `deferred()`, a block that SIGINT/SIGTERM do not cut in two
(a training step's update, a checkpoint written on the way out).

Python runs a signal handler at the next bytecode of the main thread.  When that bytecode
belongs to a weakref callback or a `__del__`, the handler's exception is swallowed ("Exception
ignored in ...") and the job would run on to the end.  So the handlers also record the signal,
and every long loop calls `raise_if_terminated()` once per window, step or block.

Neither runs while the main thread is inside one long C call (a forward pass over a huge window:
no bytecode runs until it returns). So a watchdog thread also hears the signal, through the
wakeup fd that Python's own C-level handler writes to at once, and if the process is still
alive GRACE_S seconds later it ends it with os._exit(143). Time inside a `deferred()` block does
not count: the block (a checkpoint written on the way out) finishes, then the grace starts again.
The cleanup the main thread had not reached by then is what a SIGKILL would skip too; outputs are
written so that this never leaves one that looks complete.
"""
from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

EXIT_CODE = 143
SIGINT_EXIT_CODE = 130
GRACE_S = 0.8  # the normal path (cleanup, then interpreter exit) gets this long before the watchdog
_terminated = False  # SIGTERM arrived
_interrupted = False  # SIGINT arrived
_installed = False
_deferring = 0  # deferred() blocks open in the main thread: the watchdog waits for them
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


def _watchdog(wakeup: int) -> None:
    """Wait for SIGTERM's byte on the wakeup pipe; then give the main thread GRACE_S outside deferred blocks
    to exit."""
    while True:
        got = os.read(wakeup, 64)
        if not got:
            return
        if signal.SIGTERM in got:
            break
    quiet_since = time.monotonic()
    while time.monotonic() - quiet_since < GRACE_S:
        time.sleep(0.05)
        if _deferring:
            quiet_since = time.monotonic()
    if not sys.is_finalizing():  # still not on its way out: stuck in a C call, or the exception was lost
        try:
            os.set_blocking(2, False)  # a full stderr pipe must not keep the process alive
            os.write(2, b"error: terminated (SIGTERM) before cleanup finished\n")
        except OSError:
            pass
    os._exit(EXIT_CODE)


def _forget_in_child() -> None:
    # a forked child (a DataLoader worker) would write its own SIGTERM into the parent's pipe
    global _installed
    if _installed:
        try:
            signal.set_wakeup_fd(-1)
        except ValueError:  # not forked from the main thread: the child never runs Python signal code
            pass
        _installed = False


def install() -> None:
    """Make SIGTERM end the process with exit code 143, and SIGINT raise KeyboardInterrupt even where
    Python swallows it (call from the main thread; once is enough)."""
    global _installed
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, _on_sigint)
    sys.unraisablehook = _unraisablehook
    if _installed:
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)  # the C handler must never block
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    threading.Thread(target=_watchdog, args=(read_end,), name="sigterm-watchdog", daemon=True).start()
    os.register_at_fork(after_in_child=_forget_in_child)
    _installed = True


def exit_now(code: int = EXIT_CODE) -> None:
    """End the process with `code` (143 SIGTERM, 130 Ctrl-C) once the interruption has unwound (every cleanup
    done), skipping interpreter teardown: unloading torch alone takes seconds on a busy machine, nothing there
    is ours to clean, and a signal arriving during it would end the process by that signal instead (a CI run
    once saw -2, not 130). Later SIGINTs are ignored from here on."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


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

    Outside the main thread (where handlers cannot be set) the block runs unprotected. The SIGTERM
    watchdog waits while the block runs.
    """
    global _deferring
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum))
                for sig in (signal.SIGINT, signal.SIGTERM)}
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if pending:
            signal.raise_signal(pending[0])  # the handler in force outside the block takes it
