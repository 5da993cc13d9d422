"""Genomic intervals: one type inside (0-based, half-open), 1-based inclusive strings outside.

`parse_region` reads samtools-style regions and `read_bed` reads BED files; both check the
result against the reference's contig lengths and never clip silently:

    parse_region("chr20:10,000,001-10,100,000", lengths) == Interval("chr20", 10_000_000, 10_100_000)

Bad syntax is a UsageError (exit 2); a region that parses but does not fit the reference
(unknown contig, start after end, past the contig end) is a RegionError (exit 3).

`IntervalSet` is the one type for sets of bases (confident regions, annotation classes, covered
runs): merged runs per contig, with per-base masks, overlap tests and set algebra.
"""
from __future__ import annotations

import difflib
import gzip
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from genoformer.errors import RegionError, UsageError

_RANGE = re.compile(r"(\d[\d,]*)(?:-(\d[\d,]*)?)?")
_SYNTAX_HINT = "write CONTIG, CONTIG:START or CONTIG:START-END (1-based, inclusive; commas allowed)"


@dataclass(frozen=True, order=True)
class Interval:
    """Bases `start` .. `end - 1` of `contig` (0-based, half-open)."""
    contig: str
    start: int
    end: int

    def __post_init__(self):
        if not 0 <= self.start <= self.end:
            raise ValueError(f"bad interval {self.contig}:[{self.start}, {self.end}): need 0 <= start <= end")

    def __len__(self) -> int:
        return self.end - self.start

    def to_region(self) -> str:
        """The 1-based inclusive samtools string, e.g. "chr20:10000001-10100000"."""
        if not len(self):
            raise ValueError(f"empty interval {self.contig}:[{self.start}, {self.end}) has no region string")
        contig = f"{{{self.contig}}}" if ":" in self.contig else self.contig  # htslib's quoting
        return f"{contig}:{self.start + 1}-{self.end}"

    def to_bed(self) -> str:
        return f"{self.contig}\t{self.start}\t{self.end}"


def close_names(name: str, names: Iterable[str], n: int = 3) -> list[str]:
    """Contig names a user may have meant: chr prefix added/removed (chrM <-> MT), then near spellings."""
    names = list(names)
    bare = name[3:] if name.startswith("chr") else name
    aliases = [bare, "chr" + bare] + {"M": ["MT", "chrMT"], "MT": ["M", "chrM"]}.get(bare, [])
    found = [a for a in aliases if a != name and a in names]
    found += difflib.get_close_matches(name, names, n=n, cutoff=0.8)
    return list(dict.fromkeys(found))[:n]


def _unknown_contig(contig: str, contig_lengths: Mapping[str, int], source: str | None) -> RegionError:
    where = f"{source}: " if source else ""
    near = close_names(contig, contig_lengths)
    listed = ", ".join(list(contig_lengths)[:5]) + (", ..." if len(contig_lengths) > 5 else "")
    guess = f" (did you mean {' or '.join(near)}?)" if near else ""
    return RegionError(f"{where}contig {contig!r} not found{guess}; "
                       f"the reference has {len(contig_lengths)} contigs: {listed}",
                       hint="contig names must match the reference exactly (chr20 and 20 differ)")


def check_interval(contig: str, start: int, end: int, contig_lengths: Mapping[str, int],
                   source: str | None = None) -> Interval:
    """Return Interval(contig, start, end) (0-based) if it lies on the reference, else raise RegionError."""
    if contig not in contig_lengths:
        raise _unknown_contig(contig, contig_lengths, source)
    where = f"{source}: " if source else ""
    length = contig_lengths[contig]
    if start > end:
        raise RegionError(f"{where}start {start + 1:,} is after end {end:,} in {contig}:{start + 1}-{end}")
    if start < 0 or end > length:
        raise RegionError(f"{where}{contig}:{start + 1}-{end} runs past the end of {contig} ({length:,} bp)",
                          hint=f"{contig} ends at {length:,} (1-based, inclusive)")
    return Interval(contig, start, end)


def split_region(text: str) -> tuple[str, int | None, int | None]:
    """Syntax only: "chr20:1,001-2,000" -> ("chr20", 1001, 2000) in the string's 1-based positions.

    A missing start or end is None.  A contig name with ':' in it is written in braces
    ("{HLA-A*01:01}:1-100"), as in htslib.  Raises UsageError.
    """
    text = text.strip()
    if text.startswith("{"):
        close = text.find("}")
        contig, rest = text[1:close], text[close + 1:]
        if close < 0 or (rest and not rest.startswith(":")):
            raise UsageError(f"bad region {text!r}: unbalanced braces around the contig name", hint=_SYNTAX_HINT)
        rng = rest[1:] if rest else None
    elif ":" in text:
        contig, rng = text.rsplit(":", 1)
    else:
        contig, rng = text, None
    if not contig or any(c.isspace() for c in contig):
        raise UsageError(f"bad region {text!r}: missing or blank contig name", hint=_SYNTAX_HINT)
    if rng is None:
        return contig, None, None
    m = _RANGE.fullmatch(rng)
    if not m:
        raise UsageError(f"bad region {text!r}: cannot read {rng!r} as START or START-END", hint=_SYNTAX_HINT)
    beg, end = (int(g.replace(",", "")) if g else None for g in m.groups())
    if beg == 0:
        raise UsageError(f"bad region {text!r}: positions are 1-based, so START must be at least 1",
                         hint=_SYNTAX_HINT)
    return contig, beg, end


def parse_region(text: str, contig_lengths: Mapping[str, int], source: str | None = None) -> Interval:
    """Parse a samtools-style region against the reference and return it 0-based, half-open.

    "chr20" is the whole contig; "chr20:5" and "chr20:5-" run from base 5 to the contig end
    (as samtools does); "chr20:11-20" is Interval("chr20", 10, 20).  A whole string naming a
    contig wins over reading its last ':' as a range.  `source` (a file name) prefixes errors.
    """
    stripped = text.strip()
    if stripped in contig_lengths:
        return Interval(stripped, 0, contig_lengths[stripped])
    contig, beg, end = split_region(stripped)
    if contig not in contig_lengths:
        raise _unknown_contig(contig, contig_lengths, source)
    length = contig_lengths[contig]
    start = 0 if beg is None else beg - 1
    where = f"{source}: " if source else ""
    if beg is not None and end is not None and beg > end:  # 1-based inclusive: "c:3-2" would be empty
        raise RegionError(f"{where}start {beg:,} is after end {end:,} in {contig}:{beg}-{end}")
    if start >= length:
        raise RegionError(f"{where}region {stripped!r} starts past the end of {contig} ({length:,} bp)")
    return check_interval(contig, start, length if end is None else end, contig_lengths, source)


def read_bed(path: str | Path, contig_lengths: Mapping[str, int]) -> list[Interval]:
    """Read the intervals of a BED file (plain or gzip), checked against the reference.

    Columns after the third are ignored; blank, `#`, `track` and `browser` lines are skipped.
    Every interval must be non-empty (start < end) and on the reference; errors name
    `path:line`.  Intervals are returned in file order, not merged (see `merge_intervals`).
    """
    path = Path(path)
    if not path.is_file():
        raise RegionError(f"{path}: no such BED file")
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    intervals = []
    try:
        with (gzip.open(path, "rt") if gz else open(path)) as fh:
            for lineno, line in enumerate(fh, start=1):
                text = line.rstrip("\r\n")
                if not text.strip() or text.startswith(("#", "track", "browser")):
                    continue
                intervals.append(_bed_interval(text, f"{path}:{lineno}", contig_lengths))
    except (UnicodeDecodeError, EOFError, OSError) as exc:
        raise RegionError(f"{path}: cannot read as a text BED file ({exc})") from exc
    return intervals


def _bed_interval(text: str, where: str, contig_lengths: Mapping[str, int]) -> Interval:
    fields = text.split("\t")
    if len(fields) < 3:
        fields = text.split()
    if len(fields) < 3:
        raise RegionError(f"{where}: expected at least 3 BED columns (contig, start, end), found {len(fields)}")
    contig, start, end = fields[0].strip(), fields[1].strip(), fields[2].strip()
    if not (start.isascii() and start.isdigit() and end.isascii() and end.isdigit()):
        raise RegionError(f"{where}: start and end must be non-negative integers, got {start!r} and {end!r}")
    start, end = int(start), int(end)
    if start >= end:
        raise RegionError(f"{where}: empty interval, start {start} is not before end {end} "
                          "(BED is 0-based, half-open)")
    return check_interval(contig, start, end, contig_lengths, where)


def merge_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    """Sort (by contig name, then start) and merge overlapping or adjacent intervals.

    Merging makes every base appear once, so per-base outputs get exactly one value.
    """
    return IntervalSet(intervals).merged()


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int64 starts and ends [start, end) of the runs of True in a 1-d bool array."""
    edges = np.flatnonzero(np.diff(np.concatenate(([0], np.asarray(mask, dtype=np.int8), [0]))))
    return edges[::2].astype(np.int64), edges[1::2].astype(np.int64)


_NONE = (np.zeros(0, np.int64), np.zeros(0, np.int64))


def _merge(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted, disjoint, non-adjacent runs covering the bases of [starts, ends); empty ones dropped."""
    keep = starts < ends
    starts, ends = starts[keep], ends[keep]
    if not len(starts):
        return _NONE
    order = np.argsort(starts, kind="stable")
    starts, ends = starts[order], ends[order]
    reach = np.maximum.accumulate(ends)
    first = np.flatnonzero(np.r_[True, starts[1:] > reach[:-1]])
    return starts[first], np.maximum.reduceat(ends, first)


def _combine(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray], keep) -> tuple[np.ndarray, np.ndarray]:
    """The bases where keep(in a, in b) holds: a sweep over the run boundaries of both."""
    pos = np.concatenate([a[0], a[1], b[0], b[1]])
    if not len(pos):
        return _NONE
    na, nb = len(a[0]), len(b[0])
    step_a = np.concatenate([np.ones(na, np.int64), -np.ones(na, np.int64), np.zeros(2 * nb, np.int64)])
    step_b = np.concatenate([np.zeros(2 * na, np.int64), np.ones(nb, np.int64), -np.ones(nb, np.int64)])
    order = np.argsort(pos, kind="stable")
    pos, step_a, step_b = pos[order], step_a[order], step_b[order]
    at = np.flatnonzero(np.r_[True, pos[1:] != pos[:-1]])  # first event at each distinct position
    edges = pos[at]
    inside = keep(np.add.reduceat(step_a, at).cumsum() > 0, np.add.reduceat(step_b, at).cumsum() > 0)[:-1]
    return _merge(edges[:-1][inside], edges[1:][inside])


class IntervalSet:
    """A set of bases: per contig, sorted and merged runs [start, end) held as int64 numpy arrays.

    Overlapping and adjacent intervals become one run and empty ones vanish, so the runs are
    exactly the bases, each once. Iterating yields the runs as Intervals, contigs in name order
    (as `sorted` orders Intervals); len() is the number of bases.

        IntervalSet([Interval("chr1", 5, 12), Interval("chr1", 10, 20)]).merged() == [Interval("chr1", 5, 20)]
    """

    def __init__(self, intervals: Iterable[Interval] = ()):
        spans: dict[str, list[tuple[int, int]]] = {}
        for iv in intervals:
            spans.setdefault(iv.contig, []).append((iv.start, iv.end))
        self._runs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        for contig, pairs in spans.items():
            edges = np.array(pairs, dtype=np.int64)
            self._set(contig, _merge(edges[:, 0], edges[:, 1]))

    @classmethod
    def from_arrays(cls, runs: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> IntervalSet:
        """From contig -> (starts, ends) arrays of 0-based half-open intervals, in any order, overlapping or not."""
        out = cls()
        for contig, (starts, ends) in runs.items():
            starts, ends = np.asarray(starts, dtype=np.int64), np.asarray(ends, dtype=np.int64)
            if starts.shape != ends.shape or starts.ndim != 1 or (starts < 0).any() or (starts > ends).any():
                raise ValueError(f"bad intervals on {contig}: need 1-d starts and ends with 0 <= start <= end")
            out._set(contig, _merge(starts, ends))
        return out

    @classmethod
    def from_mask(cls, contig: str, mask: np.ndarray, offset: int = 0) -> IntervalSet:
        """The True bases of a bool array over contig:[offset, offset + len(mask))."""
        starts, ends = runs(mask)
        return cls.from_arrays({contig: (starts + offset, ends + offset)})

    def _set(self, contig: str, merged: tuple[np.ndarray, np.ndarray]) -> None:
        if len(merged[0]):
            self._runs[contig] = merged

    @property
    def contigs(self) -> list[str]:
        """Contigs holding at least one base, in name order."""
        return sorted(self._runs)

    def arrays(self, contig: str) -> tuple[np.ndarray, np.ndarray]:
        """int64 (starts, ends) of the runs on `contig`, sorted; empty arrays for a contig without bases."""
        return self._runs.get(contig, _NONE)

    def __iter__(self) -> Iterator[Interval]:
        for contig in self.contigs:
            starts, ends = self._runs[contig]
            yield from (Interval(contig, s, e) for s, e in zip(starts.tolist(), ends.tolist()))

    def merged(self) -> list[Interval]:
        """The runs as a list of Intervals, sorted by contig name, then start."""
        return list(self)

    def __len__(self) -> int:
        return sum(self.bases(c) for c in self._runs)

    def bases(self, contig: str) -> int:
        """The number of bases on `contig`."""
        starts, ends = self.arrays(contig)
        return int((ends - starts).sum())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IntervalSet):
            return NotImplemented
        return self._runs.keys() == other._runs.keys() and all(
            np.array_equal(a, b) for c in self._runs for a, b in zip(self._runs[c], other._runs[c]))

    def __repr__(self) -> str:
        return f"IntervalSet({len(self):,} bases in {sum(len(s) for s, _ in self._runs.values()):,} runs)"

    def overlaps(self, contig: str, start: int, end: int) -> bool:
        """Whether any base of contig:[start, end) is in the set."""
        starts, ends = self.arrays(contig)
        i = int(np.searchsorted(ends, start, "right"))  # the first run ending after `start`
        return bool(start < end and i < len(starts) and starts[i] < end)

    def contains(self, contig: str, start: int, end: int) -> bool:
        """Whether every base of contig:[start, end) is in the set (runs are merged, so: inside one run)."""
        if start >= end:
            return True
        starts, ends = self.arrays(contig)
        i = int(np.searchsorted(starts, start, "right")) - 1
        return bool(i >= 0 and end <= ends[i])

    def _clipped(self, contig: str, start: int, end: int) -> tuple[np.ndarray, np.ndarray]:
        """The runs that overlap [start, end), clipped to it."""
        starts, ends = self.arrays(contig) if start < end else _NONE
        lo, hi = np.searchsorted(ends, start, "right"), np.searchsorted(starts, end, "left")
        return np.maximum(starts[lo:hi], start), np.minimum(ends[lo:hi], end)

    def within(self, contig: str, start: int, end: int) -> list[Interval]:
        """The set's runs inside contig:[start, end) (cut at its edges), in order."""
        starts, ends = self._clipped(contig, start, end)
        return [Interval(contig, s, e) for s, e in zip(starts.tolist(), ends.tolist())]

    def mask(self, contig: str, start: int, end: int) -> np.ndarray:
        """bool [end - start]: which bases of contig:[start, end) are in the set."""
        n = end - start
        starts, ends = self._clipped(contig, start, end)
        diff = np.zeros(n + 1, dtype=np.int32)
        np.add.at(diff, starts - start, 1)
        np.add.at(diff, ends - start, -1)
        return np.cumsum(diff[:n]) > 0

    def _pairwise(self, other: IntervalSet, keep) -> IntervalSet:
        out = IntervalSet()
        for contig in self._runs.keys() | other._runs.keys():
            out._set(contig, _combine(self.arrays(contig), other.arrays(contig), keep))
        return out

    def union(self, *others: IntervalSet) -> IntervalSet:
        """The bases in this set or in any of `others`."""
        joined = {}
        for contig in set().union(self._runs, *(o._runs for o in others)):
            parts = [s.arrays(contig) for s in (self, *others)]
            joined[contig] = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        return IntervalSet.from_arrays(joined)

    def intersection(self, other: IntervalSet) -> IntervalSet:
        return self._pairwise(other, np.logical_and)

    def difference(self, other: IntervalSet) -> IntervalSet:
        """The bases of this set that are not in `other`."""
        return self._pairwise(other, lambda a, b: a & ~b)


class RegionParamType(click.ParamType):
    """A `--region` option: checks the syntax (and start <= end) only; the reference checks the rest."""
    name = "region"

    def convert(self, value, param, ctx):
        if isinstance(value, Interval):
            return value
        try:
            _, beg, end = split_region(value)
        except UsageError as err:
            self.fail(str(err), param, ctx)
        if beg is not None and end is not None and beg > end:
            self.fail(f"bad region {value!r}: start {beg:,} is after end {end:,}", param, ctx)
        return value.strip()


REGION = RegionParamType()
