"""A sequence-logo-style picture of per-base importance (matplotlib).

Top: importance along the whole region. Bottom: the `width` consecutive bases with the largest
summed |importance|, each drawn as its reference letter, as tall as its importance (below the
axis where negative), coloured by base.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from genoformer.errors import OutputError

COLOURS = {"A": "#109648", "C": "#255C99", "G": "#F7B32B", "T": "#D62839"}


def require_matplotlib() -> None:
    """OutputError (an environment problem, exit 4) when matplotlib is missing (a dependency of genoformer; a
    broken environment can still lack it)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise OutputError("matplotlib is not installed; it draws the logo pictures",
                          hint='pip install matplotlib (or "genoformer[plot]"), or add --no-logo') from None


def top_stretch(values: np.ndarray, width: int) -> int:
    """Start of the `width` consecutive values with the largest sum of |values|."""
    width = min(width, len(values))
    sums = np.convolve(np.abs(values), np.ones(width), mode="valid")
    return int(np.argmax(sums))


def draw_logo(path: Path, bases: np.ndarray, values: np.ndarray, region_start: int, contig: str, title: str,
              width: int) -> None:
    """Write the picture for one class: bases uint8 [L], values (importance) float [L]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.font_manager import FontProperties
    from matplotlib.patches import PathPatch
    from matplotlib.textpath import TextPath
    from matplotlib.transforms import Affine2D

    first = top_stretch(values, width)
    stretch = slice(first, first + min(width, len(values)))
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 5), gridspec_kw={"height_ratios": [1, 2]})
    positions = region_start + 1 + np.arange(len(values))
    top.plot(positions, values, lw=0.8, color="#333333")
    top.axvspan(positions[stretch][0], positions[stretch][-1], color="#F7B32B", alpha=0.3)
    top.set_xlim(positions[0], positions[-1])
    top.set_ylabel("importance")
    top.set_title(title)
    font = FontProperties(family="DejaVu Sans", weight="bold")
    for x, (base, value) in enumerate(zip(bases[stretch].tobytes().decode().upper(), values[stretch])):
        glyph = TextPath((0, 0), base, size=1, prop=font)
        box = glyph.get_extents()
        scale = Affine2D().translate(-box.x0, -box.y0).scale(0.9 / max(box.width, 1e-9),
                                                              abs(value) / max(box.height, 1e-9))
        if value < 0:
            scale = scale.scale(1, -1)
        bottom.add_patch(PathPatch(scale.translate(x + 0.05, 0).transform_path(glyph), lw=0,
                                   color=COLOURS.get(base, "#888888")))
    shown = values[stretch]
    low, high = min(float(shown.min()), 0.0), max(float(shown.max()), 0.0)
    pad = 0.05 * (high - low or 1.0)
    bottom.set_xlim(0, len(shown))
    bottom.set_ylim(low - pad, high + pad)
    bottom.axhline(0, color="#333333", lw=0.5)
    ticks = np.arange(0, len(shown), max(1, len(shown) // 8))
    bottom.set_xticks(ticks + 0.5)
    bottom.set_xticklabels([f"{positions[first + t]:,}" for t in ticks])
    bottom.set_xlabel(f"{contig} (1-based)")
    bottom.set_ylabel("importance")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=120)
    plt.close(fig)
