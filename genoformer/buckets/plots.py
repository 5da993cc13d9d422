"""Pictures of LSH buckets (PNG and SVG) with matplotlib, the optional `plot` extra.

Figures are built on matplotlib's object API with the Agg canvas, never pyplot, so plotting from a
notebook or a headless cluster node leaves the caller's backend alone. x-axes are genomic,
1-based positions as a genome browser shows them.
"""
from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from genoformer.buckets.map import BucketMap, bucket_rgb
from genoformer.coords import runs
from genoformer.errors import OutputError
from genoformer.outputs import staged

MAX_COLUMNS = 20_000  # bases drawn per bucket strip; longer regions are sampled evenly
GC_BINS = 400  # GC fraction drawn at this many points along the region
GC_MIN_WIDTH = 20  # ... each the mean over at least this many bases around it
LETTERS_MAX = 150  # regions up to this long show their bases as letters instead
BASE_COLORS = {"A": "tab:green", "C": "tab:blue", "G": "tab:orange", "T": "tab:red"}
FORMATS = ("png", "svg")
TRACK_LABELS = {"soft_masked": "repeats (soft-masked)"}


def require_matplotlib() -> None:
    """OutputError (exit 4) with the install line if matplotlib is missing (a dependency of genoformer since
    pictures are what most people run `buckets` for; a broken environment can still lack it)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise OutputError("plots need matplotlib, which is not installed",
                          hint="pip install matplotlib (or 'genoformer[plot]'), or pass --no-plots") from None


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


def _gc_track(ax, sequence: np.ndarray, start: int) -> None:
    """The region's sequence under the buckets: its bases as letters when they fit, else GC per bin, N shaded."""
    upper = np.where((sequence >= 97) & (sequence <= 122), sequence - 32, sequence)
    n = len(upper)
    if n <= LETTERS_MAX:
        for i, base in enumerate(upper.tobytes().decode("ascii", "replace")):
            ax.text(start + i + 0.5, 0.5, base, ha="center", va="center", fontsize=6, family="monospace",
                    color=BASE_COLORS.get(base, "0.4"))
        ax.set_ylim(0, 1)
        ax.set_yticks([0.5], ["sequence"], fontsize=8)
        return
    gc = np.isin(upper, (ord("G"), ord("C"))).astype(np.float64)
    unknown = ~np.isin(upper, (ord("A"), ord("C"), ord("G"), ord("T")))
    width = min(max(GC_MIN_WIDTH, n // GC_BINS), n)  # bases averaged around each point
    kernel = np.ones(width)
    known = np.convolve(~unknown, kernel, mode="same")
    fraction = np.divide(np.convolve(gc, kernel, mode="same"), known, out=np.full(n, np.nan), where=known > 0)
    at = np.unique(np.linspace(0, n - 1, min(n, GC_BINS)).astype(int))
    ax.fill_between(start + at + 0.5, fraction[at], color="0.55", linewidth=0)
    for s, e in zip(*runs(unknown)):
        ax.axvspan(start + int(s), start + int(e), color="0.85", linewidth=0)
    ax.set_ylim(0, 1)
    ax.set_yticks([0, 0.5, 1], ["0", f"GC ({width:,} bp)", "1"], fontsize=7)


def _annotation(ax, tracks: Mapping[str, np.ndarray], start: int) -> None:
    names = list(tracks)
    for row, name in enumerate(names):
        starts, ends = runs(tracks[name])
        ax.broken_barh(list(zip((start + starts).tolist(), (ends - starts).tolist())), (row + 0.15, 0.7),
                       color=f"C{row % 10}", linewidth=0)
    ax.set_ylim(max(len(names), 1), 0)
    labels = [TRACK_LABELS.get(n, n) + ("" if tracks[n].any() else " (none here)") for n in names]
    ax.set_yticks(np.arange(len(names)) + 0.5, labels, fontsize=8)


def _window_edges(ax, bmaps: Sequence[BucketMap], label: bool) -> None:
    """Dashed lines where one model window's region ends and the next begins: buckets never meet across them."""
    for i, bmap in enumerate(bmaps[1:], start=2):
        ax.axvline(bmap.region.start, color="black", linestyle="--", linewidth=0.9)
        if label:
            ax.text(bmap.region.start, 0, f" window {i}", va="bottom", ha="left", fontsize=7,
                    transform=ax.get_xaxis_transform())


def track_plot(bmaps: BucketMap | Sequence[BucketMap], tracks: Mapping[str, np.ndarray], stem: str | os.PathLike,
               sequence: np.ndarray | None = None) -> list[Path]:
    """Bucket ids along the region, one strip per layer/head/round, with a colour legend of the bucket ids,
    the sequence (GC, or the bases when few) and annotation tracks beneath.

    bmaps: one BucketMap, or the maps of consecutive windows covering a longer region, drawn side by side
    with their boundaries dashed (each window hashes on its own: its bucket ids are its own).
    tracks: name -> bool mask over the whole region's bases; sequence: the region's bases (uint8).
    Writes stem.png and stem.svg; returns their paths.
    """
    bmaps = [bmaps] if isinstance(bmaps, BucketMap) else list(bmaps)
    first, last = bmaps[0], bmaps[-1]
    start, end = first.region.start, last.region.end
    combos = [(layer, head, round_) for layer in first.layers for head in first.heads for round_ in first.rounds]
    n_buckets = max(b.n_buckets for b in bmaps)
    colors = np.vstack([bucket_rgb(n_buckets), [1.0, 1.0, 1.0]])  # white: no bucket
    strip_h, track_h, seq_h = 0.16, 0.28, 0.45
    rows = [strip_h * len(combos), 0.2, seq_h if sequence is not None else 0.0, track_h * max(len(tracks), 1)]
    fig = _figure(12, 3.0 + sum(rows))
    grid = fig.add_gridspec(len(rows), 1, height_ratios=[max(r, 1e-3) for r in rows], hspace=0.55)
    ax = fig.add_subplot(grid[0])
    per_window = max(MAX_COLUMNS // len(bmaps), 1)
    for bmap in bmaps:
        region = bmap.region
        n_cols = min(len(region), per_window)
        positions = region.start + (np.arange(n_cols) * len(region)) // n_cols
        image = np.stack([bmap.bucket_at(layer, head, round_, positions) for layer, head, round_ in combos])
        ax.imshow(colors[np.where(image >= 0, image, n_buckets)], aspect="auto", interpolation="nearest",
                  extent=(region.start, region.end, len(combos), 0))
    ax.set_xlim(start, end)
    ax.set_yticks(np.arange(len(combos)) + 0.5, [first.name(*c) for c in combos],
                  fontsize=max(4, min(8, 400 / max(len(combos), 1))))
    for boundary in range(len(first.heads) * len(first.rounds), len(combos), len(first.heads) * len(first.rounds)):
        ax.axhline(boundary, color="black", linewidth=0.8)  # between layers
    _window_edges(ax, bmaps, label=True)
    ax.tick_params(axis="x", labelbottom=False)
    windows = f"{len(bmaps)} model windows, " if len(bmaps) > 1 else ""
    ax.set_title(f"LSH buckets over {_label(first.contig, start, end)} ({windows}hash seed {first.hash_seed}, "
                 f"{n_buckets} buckets per round; model {first.model.get('sha256', '')[:12]})", fontsize=9, loc="left")

    legend = fig.add_subplot(grid[1])
    legend.imshow(colors[None, :n_buckets], aspect="auto", interpolation="nearest", extent=(-0.5, n_buckets - 0.5, 1, 0))
    ticks = np.unique(np.linspace(0, n_buckets - 1, min(n_buckets, 9)).round().astype(int))
    legend.set_xticks(ticks, [str(t) for t in ticks], fontsize=7)
    legend.set_yticks([0.5], ["bucket id"], fontsize=8)
    legend.set_xlabel("colour of each bucket id: bases of one colour in one strip were hashed together, and attend "
                      "to each other", fontsize=8)

    axes = [ax]
    if sequence is not None:
        sax = fig.add_subplot(grid[2], sharex=ax)
        _gc_track(sax, np.asarray(sequence), start)
        sax.tick_params(axis="x", labelbottom=False)
        _window_edges(sax, bmaps, label=False)
        axes.append(sax)
    tax = fig.add_subplot(grid[3], sharex=ax)
    _annotation(tax, tracks, start)
    _window_edges(tax, bmaps, label=False)
    tax.set_xlim(start, end)
    _genomic_axis(tax, f"{first.contig} position (1-based)")
    return _save(fig, Path(stem))


def query_stem(out: str | os.PathLike, contig: str, position: int) -> Path:
    """out/query_<contig>_<1-based position>, the contig made file-name safe."""
    return Path(out) / f"query_{re.sub(r'[^A-Za-z0-9._-]', '_', contig)}_{position + 1}"


def query_plot(bmap: BucketMap, position: int, stem: str | os.PathLike, tracks: Mapping[str, np.ndarray] | None = None,
               sequence: np.ndarray | None = None) -> list[Path]:
    """Arcs from the token owning `position` (0-based) to its top attended tokens, one panel per layer, with
    the sequence (GC, or the bases when few) and annotation tracks under the arcs.

    Each arc joins the query to one attended token (a triangle); its height is the attention weight
    (summed over rounds), its colour the head (legend). The region is shaded, the query a dashed line;
    the x-axis spans the query and its partners, within the window. `tracks` (name -> bool mask) and
    `sequence` cover the window's real bases, from bmap.window.start.
    """
    bmap.top_attended(bmap.layers[0], bmap.heads[0], position)  # UsageError outside the region
    tracks = dict(tracks or {})
    token = int(bmap.token_of(position))
    qx = (bmap.token_start[token] + bmap.token_end[token]) / 2
    window = bmap.window
    heights = [1.9] * len(bmap.layers) + ([0.45] if sequence is not None else []) + ([0.28 * len(tracks)] if tracks else [])
    fig = _figure(12, 1.2 + sum(heights))
    axes = fig.subplots(len(heights), 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]
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
        ax.legend(fontsize=7, loc="upper right", frameon=False, ncol=len(bmap.heads),
                  title="arc colour: head; height: weight", title_fontsize=7)
    # zoom to the query and its partners (LSH often keeps them close), never past the window
    reach = [bmap.token_start[token], bmap.token_end[token]]
    for layer, head in ((layer, head) for layer in bmap.layers for head in bmap.heads):
        starts, ends, _ = bmap.top_attended(layer, head, position)
        reach += [*starts.tolist(), *ends.tolist()]
    pad = max(0.1 * (max(reach) - min(reach)), 100)
    lo, hi = max(window.start, min(reach) - pad), min(window.valid_end, max(reach) + pad)
    below = list(axes[len(bmap.layers):])
    if sequence is not None:
        shown = slice(int(lo) - window.start, int(np.ceil(hi)) - window.start)
        _gc_track(below.pop(0), np.asarray(sequence)[shown], int(lo))
    if tracks:
        _annotation(below.pop(0), tracks, window.start)
    axes[-1].set_xlim(lo, hi)
    region = _label(bmap.contig, bmap.region.start, bmap.region.end)
    _genomic_axis(axes[-1], f"{bmap.contig} position (1-based); shaded: region {region}")
    span = _label(bmap.contig, int(bmap.token_start[token]), int(bmap.token_end[token]))
    axes[0].set_title(f"Top {bmap.top_tokens.shape[-1]} attended tokens of {bmap.contig}:{position + 1:,} "
                      f"(token {span}; hash seed {bmap.hash_seed})", fontsize=9, loc="left")
    return _save(fig, Path(stem))
