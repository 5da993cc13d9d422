"""What a training run shows the person watching it, on stderr.

On a terminal: a tqdm bar with loss, tokens/s and bases/s, its time left from the mean rate since the
start (smoothing 0, so a validation pause does not swing it from minutes to hours). Anywhere else (a
batch job's log, a pipe, `2> train.log`): a plain line every LOG_SECONDS, never carriage-return frames.
Validation results and notes are log lines (logging), so they show with --no-progress too.
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

LOG_SECONDS = 30.0  # between plain progress lines when stderr is not a terminal


def duration(seconds: float) -> str:
    """"45 s", "12 min", "3.2 h": how long, at a glance."""
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.2g} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class Progress:
    """Steps start+1..total of a run: a bar on a terminal, plain lines elsewhere, nothing when disabled."""

    def __init__(self, total: int, start: int, task: str, enabled: bool, stream=None):
        self.stream = stream or sys.stderr
        self.total, self.start = total, start
        terminal = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = tqdm(total=total, initial=start, desc=task, unit="step", smoothing=0, file=self.stream,
                        dynamic_ncols=True) if terminal else None
        self.lines = enabled and not terminal
        self.started = time.perf_counter()
        self.last_line = -LOG_SECONDS

    def step(self, step: int, loss: float, lr: float, tokens_per_s: float, bases_per_s: float) -> None:
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:,.0f}", bases_s=f"{bases_per_s:,.0f}")
            self.bar.update(1)
            return
        now = time.perf_counter()
        if not self.lines or not (now - self.last_line >= LOG_SECONDS or step == self.total):
            return
        self.last_line = now
        elapsed = now - self.started
        per_step = elapsed / max(step - self.start, 1)
        print(f"step {step:,}/{self.total:,} ({step / self.total:.0%})  loss {loss:.4f}  lr {lr:.3g}  "
              f"{per_step:.3g} s/step  {bases_per_s:,.0f} bases/s  elapsed {duration(elapsed)}  "
              f"left ~{duration(per_step * (self.total - step))}", file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
