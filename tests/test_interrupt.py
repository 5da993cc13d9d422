"""SIGTERM must end a job with 143, and SIGINT interrupt it, even when the handler runs where Python swallows
exceptions."""
import subprocess
import sys
import textwrap
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
