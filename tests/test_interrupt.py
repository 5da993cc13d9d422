"""SIGTERM must end a job with 143, and SIGINT interrupt it, even when the handler runs where Python swallows
exceptions."""
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)


def test_sigterm_landing_in_a_finalizer_still_ends_the_job_with_143():
    proc = _run("""
        import os, signal
        from genoformer import interrupt

        interrupt.install()

        class Dying:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGTERM)
                for _ in range(1000):  # the handler runs here, and __del__ swallows its SystemExit
                    pass

        Dying()
        print("ran on", flush=True)
        interrupt.raise_if_terminated()
        print("not reached", flush=True)
    """)
    assert proc.returncode == 143, proc.stderr
    assert proc.stdout == "ran on\n"
    assert proc.stderr == ""  # the swallowed SystemExit prints no 'Exception ignored' traceback


def test_other_exceptions_in_finalizers_are_still_reported():
    proc = _run("""
        from genoformer import interrupt

        interrupt.install()

        class Broken:
            def __del__(self):
                raise ValueError("a real bug")

        Broken()
        interrupt.raise_if_terminated()
    """)
    assert proc.returncode == 0
    assert "Exception ignored" in proc.stderr and "ValueError: a real bug" in proc.stderr


def test_sigterm_in_ordinary_code_exits_143_at_once():
    proc = _run("""
        import os, signal
        from genoformer import interrupt

        interrupt.install()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                pass
        except SystemExit as e:
            print("exit", e.code)
    """)
    assert proc.stdout == "exit 143\n", proc.stderr


def test_sigterm_during_one_long_c_call_still_exits_143_within_a_second():
    """The handler cannot run until a long torch call returns; the watchdog ends the process meanwhile."""
    code = textwrap.dedent("""
        import os, signal, sys, threading, time
        import torch
        from genoformer import interrupt

        interrupt.install()
        torch.set_num_threads(1)
        a = torch.rand(1500, 1500) / 1500
        threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()
        print(time.monotonic(), flush=True)
        torch.linalg.matrix_power(a, 100_000)  # one call of minutes: no bytecode runs until it returns
        print("not reached", flush=True)
    """)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 143, proc.stderr
    assert "not reached" not in proc.stdout and "terminated" in proc.stderr
    sent = float(proc.stdout.split()[0]) + 1.0
    assert time.monotonic() - sent < 2.5  # the watchdog waits GRACE_S, then ends it
    assert started < sent


def test_a_forked_child_terminated_does_not_end_its_parent():
    """DataLoader workers are forked and stopped with SIGTERM: the parent's watchdog must not hear theirs."""
    proc = _run("""
        import os, signal, time
        from genoformer import interrupt

        interrupt.install()
        pid = os.fork()
        if pid == 0:
            time.sleep(30)
            os._exit(0)
        time.sleep(0.5)
        os.kill(pid, signal.SIGTERM)
        _, status = os.waitpid(pid, 0)
        time.sleep(interrupt.GRACE_S + 0.5)
        print("parent alive", os.waitstatus_to_exitcode(status), flush=True)
    """)
    assert proc.returncode == 0 and proc.stdout == "parent alive 143\n", proc.stderr


def test_a_signal_inside_a_deferred_block_arrives_when_it_ends():
    proc = _run("""
        import os, signal
        from genoformer import interrupt

        interrupt.install()
        try:
            with interrupt.deferred():
                os.kill(os.getpid(), signal.SIGINT)
                os.kill(os.getpid(), signal.SIGTERM)
                print("block finished", flush=True)
        except KeyboardInterrupt:
            print("interrupted after the block", flush=True)
        try:  # recorded like any SIGINT: a loop check raises it again
            interrupt.raise_if_terminated()
        except KeyboardInterrupt:
            print("recorded", flush=True)
        interrupt._interrupted = False
        outside = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
        with interrupt.deferred():
            pass
        print("handlers restored:", (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == outside,
              flush=True)
        os.kill(os.getpid(), signal.SIGTERM)
        print("not reached", flush=True)
    """)
    assert proc.stdout.splitlines() == ["block finished", "interrupted after the block", "recorded",
                                       "handlers restored: True"]
    assert proc.returncode == 143, proc.stderr


def test_the_watchdog_lets_a_deferred_block_finish():
    """A checkpoint written on the way out (train, inside deferred()) may take longer than the watchdog's grace."""
    proc = _run("""
        import os, signal, time
        from genoformer import interrupt

        interrupt.install()
        try:
            with interrupt.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(3 * interrupt.GRACE_S)  # the watchdog has heard the signal all this while
                print("block finished", flush=True)
        except SystemExit as stop:
            print("exit", stop.code, "after the block", flush=True)
            raise
    """)
    assert proc.stdout.splitlines() == ["block finished", "exit 143 after the block"], proc.stderr
    assert proc.returncode == 143 and "terminated" not in proc.stderr, proc.stderr


def test_sigint_landing_in_a_finalizer_still_interrupts_the_job():
    proc = _run("""
        import os, signal
        from genoformer import interrupt

        interrupt.install()

        class Dying:
            def __del__(self):
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):  # the handler runs here, and __del__ swallows its KeyboardInterrupt
                    pass

        Dying()
        print("ran on", flush=True)
        try:
            interrupt.raise_if_terminated()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "ran on\ninterrupted\n"
    assert proc.stderr == ""  # the swallowed KeyboardInterrupt prints no 'Exception ignored' traceback
