"""The shards of one sample: what each holds, and whether they can be merged (see genoformer.predict.merge).

`read_shard` checks that a file is a complete genoformer-predictions file and reads what the
checks need without loading any per-base array whole: its attrs, its contigs and the runs of
bases it covers.  The checks raise InputError naming the shard or shards at fault:

* `check_consistent`: same model (model_sha256, task), reference (contig_md5 and lengths
  wherever two shards name a contig), hash seed, window, margin, step, reads and datasets;
* `check_disjoint`: no base covered by two shards;
* `check_expected`: every expected base covered by some shard.
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from genoformer.coords import Interval, IntervalSet
from genoformer.errors import InputError
from genoformer.io.predictions import FORMAT, FORMAT_VERSION, check_layout, covered_runs, reading, structure_read

log = logging.getLogger(__name__)

# attrs every shard must agree on, with what a difference means to the user
_SAME = {
    "task": "tasks",
    "model_sha256": "models (checkpoint weights)",
    "hash_seed": "hash seeds",
    "window": "window sizes",
    "margin": "margins",
    "step": "window steps",
    "bam": "read files (--bam)",
}


@dataclass
class Shard:
    """What merge needs to know about one shard, read once up front."""
    path: Path
    attrs: dict
    lengths: dict[str, int]  # contig -> length, for each /contigs/<contig> group
    covered: IntervalSet  # the bases it covers
    datasets: dict[str, tuple[tuple[int, ...], str]] = field(default_factory=dict)  # name -> (shape[1:], dtype)

    @property
    def name(self) -> str:
        return str(self.path)


# ---------------------------------------------------------------------------------------------
# reading the shards


def _attr(value):
    """h5py attr -> plain Python (bytes -> str, numpy scalars -> int/float/bool)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_attr(v) for v in value.tolist()]
    return value


def read_shard(path: str | os.PathLike) -> Shard:
    """Check that `path` is a complete predictions file and read its attrs and covered runs."""
    path = Path(path)
    try:
        fh = h5py.File(path, "r")
    except FileNotFoundError:
        raise InputError(f"{path}: no such shard file") from None
    except OSError as exc:
        raise InputError(f"{path}: not a readable HDF5 file ({exc})") from None
    with fh, structure_read(path):
        attrs = {k: _attr(v) for k, v in fh.attrs.items()}
        if attrs.get("format") != FORMAT:
            raise InputError(f"{path}: not a genoformer predictions file (format attr {attrs.get('format')!r})")
        if attrs.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{path}: predictions format_version {attrs.get('format_version')!r}; "
                             f"this genoformer reads {FORMAT_VERSION}", hint="predict it again with this version")
        if not attrs.get("complete"):
            raise InputError(f"{path}: incomplete shard (complete=False): its predict job did not finish",
                             hint="run predict for this shard again (with --resume where it supports it)")
        lengths, layouts = check_layout(path, fh, str(attrs.get("task")))
        covered = {}
        for contig in lengths:
            with reading(path, contig, "covered"):
                covered[contig] = covered_runs(fh[f"contigs/{contig}/covered"])
        layouts.pop("covered", None)
    return Shard(path, attrs, lengths, IntervalSet.from_arrays(covered), layouts)


# ---------------------------------------------------------------------------------------------
# the checks


def _region(contig: str, start: int, end: int) -> str:
    return f"{contig}:{start + 1:,}-{end:,}"


def check_consistent(shards: Sequence[Shard]) -> None:
    """Same model, task, reference, hash seed, window, margin, reads and datasets, or InputError."""
    first = shards[0]
    for key, what in _SAME.items():
        for shard in shards[1:]:
            if shard.attrs.get(key) != first.attrs.get(key):
                raise InputError(f"shards come from different {what}: {first.name} has {key}="
                                 f"{first.attrs.get(key)!r} but {shard.name} has {shard.attrs.get(key)!r}",
                                 hint="merge only the shards of one sample predicted with one model and settings")
    md5: dict[str, tuple[str, Shard]] = {}
    lengths: dict[str, tuple[int, Shard]] = {}
    for shard in shards:
        try:
            sums = json.loads(shard.attrs.get("contig_md5") or "{}")
        except (TypeError, ValueError):
            raise InputError(f"{shard.name}: contig_md5 attr is not a JSON object") from None
        for contig, digest in sums.items():
            seen = md5.setdefault(contig, (digest, shard))
            if seen[0] != digest:
                raise InputError(f"shards were predicted on different references: {contig} has md5 {seen[0]} "
                                 f"in {seen[1].name} but {digest} in {shard.name}",
                                 hint="predict every shard against the same reference FASTA")
        for contig, length in shard.lengths.items():
            seen_len = lengths.setdefault(contig, (length, shard))
            if seen_len[0] != length:
                raise InputError(f"shards disagree on the length of {contig}: {seen_len[0]:,} in "
                                 f"{seen_len[1].name} but {length:,} in {shard.name}")
    for shard in shards[1:]:
        if shard.datasets.keys() != first.datasets.keys() and shard.datasets and first.datasets:
            only = sorted(set(first.datasets) ^ set(shard.datasets))
            raise InputError(f"shards hold different datasets ({', '.join(only)}): {first.name} and {shard.name}")
        for name, layout in shard.datasets.items():
            other = first.datasets.get(name, layout)
            if other != layout:
                raise InputError(f"{name} is {other[0]} {other[1]} in {first.name} but {layout[0]} {layout[1]} "
                                 f"in {shard.name}")


def check_disjoint(shards: Sequence[Shard]) -> None:
    """No base covered by two shards, or InputError naming both shards and the first shared stretch."""
    contigs = sorted({c for s in shards for c in s.covered.contigs})
    for contig in contigs:
        runs = sorted((start, end, i) for i, s in enumerate(shards)
                      for start, end in zip(*(a.tolist() for a in s.covered.arrays(contig))))
        reach, owner = -1, -1
        for start, end, i in runs:
            if start < reach:
                a, b = shards[owner], shards[i]
                stop = min(end, reach)
                raise InputError(f"shards overlap: {a.name} and {b.name} both cover {_region(contig, start, stop)} "
                                 f"({stop - start:,} bases)",
                                 hint="predict shards over disjoint regions; merge will not pick one over another")
            if end > reach:
                reach, owner = end, i


def check_expected(shards: Sequence[Shard], expected: Sequence[Interval]) -> None:
    """Every expected base is covered by some shard, or InputError naming the missing stretches.

    The shards' covered bases and the expected ones are sets of merged runs per contig, so an exome BED
    against exome shards costs O((intervals + runs) log(intervals + runs)), not their product.
    """
    covered = IntervalSet().union(*(shard.covered for shard in shards))
    missing = IntervalSet(expected).difference(covered).merged()
    if missing:
        listed = ", ".join(_region(m.contig, m.start, m.end) for m in missing[:3])
        more = f" and {len(missing) - 3:,} more stretches" if len(missing) > 3 else ""
        total = sum(len(m) for m in missing)
        raise InputError(f"the {len(shards)} shards leave {total:,} expected bases uncovered: {listed}{more}",
                         hint="a shard is missing or was predicted over the wrong region; predict it and merge again")


def reference_lengths(shards: Sequence[Shard]) -> dict[str, int]:
    """Contig lengths of the shards' reference (the FASTA itself where readable, else the shards' groups)."""
    path = shards[0].attrs.get("reference")
    if path and Path(path).is_file():
        from genoformer.io.fasta import Reference

        return dict(Reference(path).contigs)
    log.warning("reference %s not found; contigs no shard predicted cannot be checked", path)
    lengths: dict[str, int] = {}
    for shard in shards:
        lengths.update(shard.lengths)
    return lengths
