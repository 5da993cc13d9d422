"""Cut the regions to predict into shards: one predict job each, merged back per sample.

Long contigs are cut at fixed genome coordinates (multiples of `shard_size`), so a shard's
region does not depend on which other regions were asked for; pieces shorter than a shard
(small contigs, unplaced scaffolds, BED intervals) are packed together, in reference order,
until a shard holds `shard_size` bases.  A genome of 3,000 decoy contigs thus gives a few
shards, not 3,000 jobs.

    plan_shards({"chr20": 63_025_520}, 20_000_000)  ->  4 shards: chr20:1-20,000,000, ...
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from genoformer.coords import Interval, merge_intervals
from genoformer.errors import UsageError


@dataclass(frozen=True)
class Shard:
    """One predict job: a name usable in file names and the intervals (0-based) it covers."""
    name: str
    intervals: tuple[Interval, ...]

    @property
    def regions(self) -> list[str]:
        """The intervals as samtools-style region strings (1-based), for `predict --region`."""
        return [iv.to_region() for iv in self.intervals]

    def __len__(self) -> int:
        return sum(len(iv) for iv in self.intervals)


def _pieces(targets: Sequence[Interval], shard_size: int) -> list[Interval]:
    pieces = []
    for iv in targets:
        cut = iv.start
        while cut < iv.end:
            nxt = min((cut // shard_size + 1) * shard_size, iv.end)
            pieces.append(Interval(iv.contig, cut, nxt))
            cut = nxt
    return pieces


def plan_shards(contigs: Mapping[str, int], shard_size: int,
                regions: Sequence[Interval] | None = None) -> list[Shard]:
    """Shards over `regions` (default: every contig end to end), each holding at most `shard_size` bases.

    Parameters
    ----------
    contigs : contig -> length, in reference order (e.g. `Reference(path).contigs`).
    shard_size : bases per shard (> 0).
    regions : intervals to predict (0-based, half-open); overlaps are merged first.

    Returns shards in reference order; their intervals are disjoint and cover `regions` exactly.
    """
    if shard_size <= 0:
        raise UsageError(f"shard size must be positive, got {shard_size}")
    order = {contig: i for i, contig in enumerate(contigs)}
    if regions is None:
        targets = [Interval(c, 0, n) for c, n in contigs.items() if n > 0]
    else:
        for iv in regions:
            if iv.contig not in order:
                raise UsageError(f"region contig {iv.contig!r} is not in the reference")
        targets = sorted(merge_intervals(regions), key=lambda iv: (order[iv.contig], iv.start))
    shards: list[list[Interval]] = []
    size = shard_size  # of the shard being filled; starts "full" so the first piece opens one
    for piece in _pieces(targets, shard_size):
        if size + len(piece) > shard_size:
            shards.append([])
            size = 0
        shards[-1].append(piece)
        size += len(piece)
    return [Shard(_name(i, ivs[0]), tuple(ivs)) for i, ivs in enumerate(shards, start=1)]


def _name(index: int, first: Interval) -> str:
    """e.g. "0003_chr20_40000001": ordered, and says where the shard starts (1-based)."""
    contig = re.sub(r"[^A-Za-z0-9._-]", "_", first.contig)
    return f"{index:04d}_{contig}_{first.start + 1}"
