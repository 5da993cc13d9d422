"""Pictures of LSH buckets (PNG and SVG) with matplotlib, the optional `plot` extra.

Figures are built on matplotlib's object API with the Agg canvas, never pyplot, so plotting from a
notebook or a headless cluster node leaves the caller's backend alone. x-axes are genomic,
1-based positions as a genome browser shows them.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from genoformer.buckets.map import BucketMap, bucket_rgb
from genoformer.coords import runs
from genoformer.errors import OutputError
from genoformer.outputs import staged

MAX_COLUMNS = 20_000  # bases drawn per bucket strip; longer regions are sampled evenly
FORMATS = ("png", "svg")
TRACK_LABELS = {"soft_masked": "repeats (soft-masked)"}


def require_matplotlib() -> None:
    """OutputError (exit 4) with the install line if matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise OutputError("plots need matplotlib, which is not installed",
                          hint="pip install 'genoformer[plot]', or pass --no-plots") from None


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, stem: Path) -> list[Path]:
    """Write stem.png and stem.svg, each under a temporary name renamed when complete."""
    paths = []
    for fmt in FORMATS:
        final = stem.with_name(f"{stem.name}.{fmt}")
        try:
            with staged(final) as tmp:
                fig.savefig(tmp, format=fmt, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
        except OutputError:
            raise
        except OSError as e:
            raise OutputError(f"{final}: cannot write ({e.strerror or e})") from None
        paths.append(final)
    return paths


def _genomic_axis(ax, label: str) -> None:
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{int(round(x)) + 1:,}"))  # 0-based -> 1-based
    ax.set_xlabel(label)


def _label(contig: str, start: int, end: int) -> str:
    """1-based, inclusive, with thousands separators: chr20:10,000,001-10,020,000."""
    return f"{contig}:{start + 1:,}-{end:,}"


def track_plot(bmap: BucketMap, tracks: Mapping[str, np.ndarray], stem: str | os.PathLike) -> list[Path]:
    """Bucket ids along the region, one strip per layer/head/round, annotation tracks beneath.

    tracks: name -> bool mask over the region's bases (e.g. genes, CpG islands, soft-masked repeats).
    Writes stem.png and stem.svg; returns their paths.
    """
    region = bmap.region
    n_cols = min(len(region), MAX_COLUMNS)
    positions = region.start + (np.arange(n_cols) * len(region)) // n_cols
    combos = [(layer, head, round_) for layer in bmap.layers for head in bmap.heads for round_ in bmap.rounds]
    image = np.stack([bmap.bucket_at(layer, head, round_, positions) for layer, head, round_ in combos])
    colors = np.vstack([bucket_rgb(bmap.n_buckets), [1.0, 1.0, 1.0]])  # white: no bucket
    rgb = colors[np.where(image >= 0, image, bmap.n_buckets)]

    strip_h, track_h = 0.16, 0.28
    height = 1.6 + strip_h * len(combos) + track_h * max(len(tracks), 1)
    fig = _figure(12, height)
    grid = fig.add_gridspec(2, 1, height_ratios=[strip_h * len(combos), track_h * max(len(tracks), 1)],
                            hspace=0.08)
    ax = fig.add_subplot(grid[0])
    ax.imshow(rgb, aspect="auto", interpolation="nearest",
              extent=(region.start, region.end, len(combos), 0))
    ax.set_yticks(np.arange(len(combos)) + 0.5, [bmap.name(*c) for c in combos],
                  fontsize=max(4, min(8, 400 / max(len(combos), 1))))
    for boundary in range(len(bmap.heads) * len(bmap.rounds), len(combos), len(bmap.heads) * len(bmap.rounds)):
        ax.axhline(boundary, color="black", linewidth=0.8)  # between layers
    ax.tick_params(axis="x", labelbottom=False)
    ax.set_title(f"LSH buckets over {_label(region.contig, region.start, region.end)} (hash seed {bmap.hash_seed}, "
                 f"{bmap.n_buckets} buckets per round; model {bmap.model.get('sha256', '')[:12]})",
                 fontsize=9, loc="left")

    tax = fig.add_subplot(grid[1], sharex=ax)
    names = list(tracks)
    for row, name in enumerate(names):
        starts, ends = runs(tracks[name])
        tax.broken_barh(list(zip((region.start + starts).tolist(), (ends - starts).tolist())), (row + 0.15, 0.7),
                        color=f"C{row % 10}", linewidth=0)
    tax.set_ylim(max(len(names), 1), 0)
    labels = [TRACK_LABELS.get(n, n) + ("" if tracks[n].any() else " (none here)") for n in names]
    tax.set_yticks(np.arange(len(names)) + 0.5, labels, fontsize=8)
    tax.set_xlim(region.start, region.end)
    _genomic_axis(tax, f"{region.contig} position (1-based)")
    return _save(fig, Path(stem))


def query_stem(out: str | os.PathLike, contig: str, position: int) -> Path:
    """out/query_<contig>_<1-based position>, the contig made file-name safe."""
    return Path(out) / f"query_{re.sub(r'[^A-Za-z0-9._-]', '_', contig)}_{position + 1}"


def query_plot(bmap: BucketMap, position: int, stem: str | os.PathLike) -> list[Path]:
    """Arcs from the token owning `position` (0-based) to its top attended tokens, one panel per layer.

    Each arc joins the query to one attended token (a triangle); its height is the attention weight
    (summed over rounds), its colour the head. The region is shaded, the query a dashed line; the
    x-axis spans the query and its partners, within the window.
    """
    bmap.top_attended(bmap.layers[0], bmap.heads[0], position)  # UsageError outside the region
    token = int(bmap.token_of(position))
    qx = (bmap.token_start[token] + bmap.token_end[token]) / 2
    window = bmap.window
    fig = _figure(12, 1.2 + 1.9 * len(bmap.layers))
    axes = fig.subplots(len(bmap.layers), 1, sharex=True, squeeze=False)[:, 0]
    t = np.linspace(0, 1, 64)
    top = float(bmap.top_weights[..., token, :].max(initial=0.0)) or 1.0
    for ax, layer in zip(axes, bmap.layers):
        ax.axvspan(bmap.region.start, bmap.region.end, color="0.92", linewidth=0, zorder=0)
        ax.axvline(qx, color="black", linewidth=0.8, linestyle="--", zorder=1)
        for h_i, head in enumerate(bmap.heads):
            starts, ends, weights = bmap.top_attended(layer, head, position)
            keys = (starts + ends) / 2
            for key, weight in zip(keys, weights):
                ax.plot(qx + (key - qx) * t, weight * np.sin(np.pi * t), color=f"C{h_i % 10}",
                        linewidth=0.6 + 1.4 * weight / top, alpha=0.85, zorder=2)
            ax.scatter(keys, np.zeros_like(keys), s=18, marker="^", color=f"C{h_i % 10}", label=f"head {head}",
                       zorder=3, clip_on=False)
        ax.set_ylim(0, 1.15 * top)
        ax.set_ylabel(f"layer {layer}\nattention weight", fontsize=8)
        ax.legend(fontsize=7, loc="upper right", frameon=False, ncol=len(bmap.heads))
    # zoom to the query and its partners (LSH often keeps them close), never past the window
    reach = [bmap.token_start[token], bmap.token_end[token]]
    for layer, head in ((layer, head) for layer in bmap.layers for head in bmap.heads):
        starts, ends, _ = bmap.top_attended(layer, head, position)
        reach += [*starts.tolist(), *ends.tolist()]
    pad = max(0.1 * (max(reach) - min(reach)), 100)
    axes[-1].set_xlim(max(window.start, min(reach) - pad), min(window.valid_end, max(reach) + pad))
    region = _label(bmap.contig, bmap.region.start, bmap.region.end)
    _genomic_axis(axes[-1], f"{bmap.contig} position (1-based); shaded: region {region}")
    span = _label(bmap.contig, int(bmap.token_start[token]), int(bmap.token_end[token]))
    axes[0].set_title(f"Top {bmap.top_tokens.shape[-1]} attended tokens of {bmap.contig}:{position + 1:,} "
                      f"(token {span}; hash seed {bmap.hash_seed})", fontsize=9, loc="left")
    return _save(fig, Path(stem))
