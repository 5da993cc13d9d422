"""training.png: the run's curves from its metrics.csv, redrawn at each validation.

Top: training loss per step (and its running mean) with the validation loss; bottom: the validation
metrics, the one that picks the best checkpoint drawn thick and its best step marked. matplotlib's
object API on the Agg canvas (never pyplot, so a notebook's backend is left alone); without
matplotlib the picture is skipped with one note.
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from genoformer.errors import OutputError
from genoformer.outputs import staged

log = logging.getLogger(__name__)

PLOT = "training.png"
_noted = False


def _series(metrics_csv: Path) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    """(split, metric) -> (steps, values) from metrics.csv."""
    points: dict[tuple[str, str], list[tuple[int, float]]] = {}
    with metrics_csv.open(newline="") as fh:
        for row in csv.DictReader(fh):
            try:
                points.setdefault((row["split"], row["metric"]), []).append((int(row["step"]), float(row["value"])))
            except (KeyError, TypeError, ValueError):
                continue  # a row a kill cut short
    return {key: tuple(np.array(v) for v in zip(*sorted(rows))) for key, rows in points.items()}


def draw(out: Path, task: str, selected: str | None, best_step: int | None) -> Path | None:
    """Write out/training.png from out/metrics.csv; None (with one note a process) without matplotlib."""
    global _noted
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        if not _noted:
            log.info("matplotlib is not installed: no %s (pip install matplotlib)", PLOT)
            _noted = True
        return None
    series = _series(out / "metrics.csv")
    fig = Figure(figsize=(8, 6), dpi=100)
    FigureCanvasAgg(fig)
    loss_ax, metric_ax = fig.subplots(2, 1, sharex=True)
    if ("train", "loss") in series:
        steps, values = series["train", "loss"]
        loss_ax.plot(steps, values, color="0.7", linewidth=0.8, label="training loss")
        span = max(1, len(values) // 20)
        smooth = np.convolve(values, np.ones(span) / span, mode="valid")
        loss_ax.plot(steps[span - 1:], smooth, color="C0", label=f"training loss, mean of {span}")
    if ("val", "loss") in series:
        loss_ax.plot(*series["val", "loss"], "o-", color="C1", label="validation loss")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title(f"{out.name}: {task}", loc="left", fontsize=10)
    loss_ax.legend(fontsize=8, frameon=False)
    names = [metric for split, metric in series if split == "val" and metric != "loss"]
    for i, name in enumerate(names):
        main = name == selected
        metric_ax.plot(*series["val", name], "o-", color=f"C{i + 2}", linewidth=2.2 if main else 1,
                       markersize=4 if main else 2, label=f"{name} (picks the best)" if main else name)
    if best_step is not None:
        metric_ax.axvline(best_step, color="black", linestyle="--", linewidth=0.8, label=f"best, step {best_step:,}")
    metric_ax.set_ylabel("validation metric")
    metric_ax.set_xlabel("step")
    if names:
        metric_ax.legend(fontsize=8, frameon=False)
    else:
        metric_ax.text(0.5, 0.5, "no validation (--val-regions)", ha="center", va="center",
                       transform=metric_ax.transAxes, color="0.5")
    path = out / PLOT
    try:
        with staged(path) as tmp:
            fig.savefig(tmp, format="png", bbox_inches="tight")
    except OSError as e:
        raise OutputError(f"{path}: cannot write ({e.strerror or e})") from None
    return path
