"""Genomic intervals: one type inside (0-based, half-open), 1-based inclusive strings outside.

`parse_region` reads samtools-style regions and `read_bed` reads BED files; both check the
result against the reference's contig lengths and never clip silently:

    parse_region("chr20:10,000,001-10,100,000", lengths) == Interval("chr20", 10_000_000, 10_100_000)

Bad syntax is a UsageError (exit 2); a region that parses but does not fit the reference
(unknown contig, start after end, past the contig end) is a RegionError (exit 3).
"""
from __future__ import annotations

import difflib
import gzip
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import click

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
    if start >= length:
        where = f"{source}: " if source else ""
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
    merged: list[Interval] = []
    for iv in sorted(intervals):
        last = merged[-1] if merged else None
        if last is not None and last.contig == iv.contig and iv.start <= last.end:
            merged[-1] = Interval(last.contig, last.start, max(last.end, iv.end))
        else:
            merged.append(iv)
    return merged


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
