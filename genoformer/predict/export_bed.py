"""Predictions HDF5 -> BED and bedGraph (`genoformer export --bed / --bedgraph`): per-class probability tracks.

BED (BED6: contig, start, end, class, score, "."): for each class, runs of adjacent covered bases
with probability >= threshold; score = 1000 x the run's mean probability. bedGraph (one file per
class): runs of adjacent covered bases whose probability, rounded to `digits` decimals, is equal.
Runs continue across the blocks the file is read in.
"""
from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from tqdm import tqdm

from genoformer import __version__
from genoformer.coords import Interval, runs
from genoformer.interrupt import raise_if_terminated
from genoformer.io.predictions import PredictionsFile
from genoformer.outputs import staged_text
from genoformer.predict.export_config import ExportConfig, one_line


def _progress(blocks: list[Interval], config: ExportConfig, what: str) -> Iterator[Interval]:
    with tqdm(total=sum(len(b) for b in blocks), unit="b", unit_scale=True, desc=what,
              disable=not config.progress, file=sys.stderr, leave=False) as bar:
        for block in blocks:
            yield block
            bar.update(len(block))
            raise_if_terminated()



def export_bed(preds: PredictionsFile, config: ExportConfig, classes: list[str], blocks: list[Interval],
                command: str) -> dict:
    columns = [preds.classes.index(c) for c in classes]
    counts = dict.fromkeys(classes, 0)
    with staged_text(config.bed, "bed", ".bed") as tmp, open(tmp, "w") as out:
        out.write(f"#genoformer {__version__}: {one_line(command)} (threshold {config.threshold})\n")
        for contig, rows in _bed_rows(preds, config, columns, blocks):
            for start, end, k, mean in rows:
                out.write(f"{contig}\t{start}\t{end}\t{classes[k]}\t{int(round(1000 * mean))}\t.\n")
                counts[classes[k]] += 1
    return {"path": config.bed, "intervals": counts}


def _bed_rows(preds: PredictionsFile, config: ExportConfig, columns: list[int], blocks: list[Interval]):
    """(contig, rows sorted by start) per stretch of blocks: runs of prob >= threshold per class.

    A run may continue across blocks, so each class keeps its open run (start, sum, count); a
    closed run is emitted once no open run starts before it, which keeps the rows sorted.
    """
    contig, pending = None, []
    open_runs: dict[int, list] = {}
    previous_end = None
    for iv in _progress(blocks, config, "export bed"):
        if iv.contig != contig or iv.start != previous_end:  # a new contig or region: close everything
            pending += [(s, e, k, total / n) for k, (s, e, total, n) in open_runs.items()]
            if pending:
                yield contig, sorted(pending)
            contig, pending, open_runs = iv.contig, [], {}
        previous_end = iv.end
        p = preds.read(iv)
        for k, col in enumerate(columns):
            prob = p.probs[:, col]
            hit = p.covered & (prob >= config.threshold)
            starts, ends = runs(hit)
            cumulative = np.concatenate([[0.0], np.cumsum(prob, dtype=np.float64)])
            sums = cumulative[ends] - cumulative[starts]
            for s, e, total in zip(starts.tolist(), ends.tolist(), sums.tolist()):
                n = e - s
                run = open_runs.pop(k, None)
                if run is not None and s == 0 and run[1] == iv.start:  # continues the open run
                    s_abs, total, n = run[0], total + run[2], n + run[3]
                else:
                    if run is not None:
                        pending.append((run[0], run[1], k, run[2] / run[3]))
                    s_abs = iv.start + s
                open_runs[k] = [s_abs, iv.start + e, total, n]
            run = open_runs.get(k)
            if run is not None and run[1] < iv.end:  # ended inside this block
                pending.append((run[0], run[1], k, run[2] / run[3]))
                del open_runs[k]
        first_open = min((r[0] for r in open_runs.values()), default=math.inf)
        ready = [r for r in pending if r[0] < first_open]
        if ready:
            pending = [r for r in pending if r[0] >= first_open]
            yield contig, sorted(ready)
    pending += [(s, e, k, total / n) for k, (s, e, total, n) in open_runs.items()]
    if pending:
        yield contig, sorted(pending)


def export_bedgraph(preds: PredictionsFile, config: ExportConfig, name: str, path: Path,
                     blocks: list[Interval]) -> dict:
    col, scale = preds.classes.index(name), 10 ** config.digits
    labels = [f"{v / scale:.{config.digits}f}" for v in range(scale + 1)]  # probabilities lie in [0, 1]
    rows = 0
    with staged_text(path, "bed", ".bedgraph") as tmp, open(tmp, "w") as out:
        run = None  # [contig, start, end, level] not yet written: the next block may extend it
        for iv in _progress(blocks, config, f"export bedgraph {name}"):
            p = preds.read(iv)  # blocks hold covered bases only
            level = np.rint(np.clip(p.probs[:, col], 0, 1) * scale).astype(np.int64)
            cuts = np.flatnonzero(np.diff(level)) + 1
            starts = np.concatenate([[0], cuts]) + iv.start
            ends = np.concatenate([cuts, [len(level)]]) + iv.start
            levels = level[starts - iv.start]
            if run is not None and run[2] == iv.start and run[0] == iv.contig and run[3] == levels[0]:
                starts[0] = run[1]  # the open run goes on into this block
            elif run is not None:
                out.write(f"{run[0]}\t{run[1]}\t{run[2]}\t{labels[run[3]]}\n")
                rows += 1
            run = [iv.contig, int(starts[-1]), int(ends[-1]), int(levels[-1])]
            out.write("".join(f"{iv.contig}\t{a}\t{b}\t{labels[v]}\n"
                              for a, b, v in zip(starts[:-1].tolist(), ends[:-1].tolist(), levels[:-1].tolist())))
            rows += len(starts) - 1
        if run is not None:
            out.write(f"{run[0]}\t{run[1]}\t{run[2]}\t{labels[run[3]]}\n")
            rows += 1
    return {"path": str(path), "intervals": rows}
