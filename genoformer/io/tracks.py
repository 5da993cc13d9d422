"""Per-base multi-label masks from annotation files.

Formats, by extension (optionally .gz):
- .bed: one class per file, named after the file (`nCoV-2019.primer.bed` -> "nCoV-2019.primer");
  track/browser/# lines are skipped; columns after the third are ignored.
- .gff, .gff3, .gtf: one class per feature type (column 3: gene, CDS, ...), 1-based inclusive
  coordinates; parsing stops at ##FASTA.
- .txt: a UCSC table with a leading `bin` column (`bin chrom chromStart chromEnd ...`, as in
  UCSC's cpgIslandExt dump), otherwise read like BED.
Classes with the same name from several files are merged (union). Features on contigs not in
`contig_lengths` are skipped (a genome-wide track against a one-chromosome reference), but a
file with none on them is an error, as is a feature past a contig's end.
"""
from __future__ import annotations

import gzip
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np

from genoformer.coords import Interval, IntervalSet, check_interval
from genoformer.errors import RegionError, TrackError
from genoformer.interrupt import raise_if_terminated

_BED, _GFF, _UCSC = "bed", "gff", "ucsc"
_FORMATS = {".bed": _BED, ".gff": _GFF, ".gff3": _GFF, ".gtf": _GFF, ".txt": _UCSC}


def _format_and_stem(path: Path) -> tuple[str, str]:
    name = path.name[:-3] if path.name.endswith(".gz") else path.name
    suffix = Path(name).suffix.lower()
    if suffix not in _FORMATS:
        raise TrackError(f"{path}: unknown annotation format {suffix or '(no extension)'!r}",
                         hint="use .bed, .gff3/.gff, .gtf, or a UCSC .txt table (optionally .gz)")
    return _FORMATS[suffix], name[:-len(suffix)]


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    if not path.is_file():
        raise TrackError(f"{path}: no such file")
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt") as fh:
            yield from enumerate(fh, start=1)
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise TrackError(f"{path}: cannot read as text ({exc})") from exc


def _int(text: str, what: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise TrackError(f"{where}: {what} {text!r} is not an integer") from None


def _parse(path: Path, fmt: str, stem: str) -> Iterator[tuple[str, str, int, int, str]]:
    """Yield (class, contig, start, end, where) with 0-based half-open coordinates."""
    for lineno, line in _lines(path):
        if lineno % 100_000 == 1:
            raise_if_terminated()
        where = f"{path}:{lineno}"
        text = line.rstrip("\r\n")
        if not text.strip() or text.startswith(("#", "track", "browser")):
            if text.startswith("##FASTA"):
                return
            continue
        if fmt == _GFF:
            fields = text.split("\t")
            if len(fields) != 9:
                raise TrackError(f"{where}: expected 9 tab-separated GFF/GTF columns, found {len(fields)}")
            start, end = _int(fields[3], "start", where) - 1, _int(fields[4], "end", where)
            if start < 0 or end < start + 1:
                raise TrackError(f"{where}: bad feature coordinates {fields[3]}-{fields[4]} (1-based, start <= end)")
            yield fields[2], fields[0], start, end, where
            continue
        fields = text.split(maxsplit=4 if fmt == _UCSC else 3)
        if fmt == _UCSC:
            _int(fields[0], "UCSC bin", where)
            fields = fields[1:]
        if len(fields) < 3:
            raise TrackError(f"{where}: expected at least 3 BED columns (contig, start, end), found {len(fields)}")
        start, end = _int(fields[1], "start", where), _int(fields[2], "end", where)
        if start < 0 or end < start:
            raise TrackError(f"{where}: bad interval {start}-{end} (0-based, start <= end)")
        yield stem, fields[0], start, end, where


class Tracks:
    """Named classes of bases (an IntervalSet each); `mask` turns a region into bool [L, n_classes].

    As a per-base source (genoformer.io.sources), `per_base` is the mask as float32 and a padding
    base is in no class (0).
    """
    pad_value = 0.0

    def __init__(self, classes: Mapping[str, IntervalSet], contig_lengths: Mapping[str, int] | None = None):
        self._classes = dict(classes)
        self.contig_lengths = None if contig_lengths is None else dict(contig_lengths)

    @classmethod
    def from_files(cls, paths: Iterable[str | os.PathLike], contig_lengths: Mapping[str, int] | None = None,
                   feature_types: Iterable[str] | None = None) -> Tracks:
        """Read BED/GFF3/GTF/UCSC files; `feature_types` keeps (and orders) only those GFF/GTF types."""
        wanted = None if feature_types is None else list(dict.fromkeys(feature_types))
        raw: dict[str, dict[str, list[tuple[int, int]]]] = {}
        bed_classes, gff_types = [], []
        for path in map(Path, paths):
            fmt, stem = _format_and_stem(path)
            seen = set()
            if fmt != _GFF:
                bed_classes.append(stem)  # a BED file is a class even where it has no features
            for cls_name, contig, start, end, where in _parse(path, fmt, stem):
                seen.add(contig)
                if fmt == _GFF and wanted is not None and cls_name not in wanted:
                    continue
                if contig_lengths is not None:
                    if contig not in contig_lengths:
                        continue
                    if end > contig_lengths[contig]:
                        raise TrackError(f"{where}: feature end {end:,} is past the end of {contig} "
                                         f"(length {contig_lengths[contig]:,})")
                if fmt == _GFF:
                    gff_types.append(cls_name)
                raw.setdefault(cls_name, {}).setdefault(contig, []).append((start, end))
            if contig_lengths is not None and seen and not seen & set(contig_lengths):
                raise TrackError(f"{path}: none of its contigs ({', '.join(sorted(seen)[:3])}, ...) is in the "
                                 f"reference ({', '.join(list(contig_lengths)[:3])}, ...)",
                                 hint="use annotation for the same reference build and contig names")
        if wanted is not None:
            missing = [t for t in wanted if t not in gff_types]
            if missing:
                raise TrackError(f"no {', '.join(missing)} features in the GFF/GTF files "
                                 f"(found: {', '.join(dict.fromkeys(gff_types)) or 'none'})")
            gff_types = wanted
        names = list(dict.fromkeys(bed_classes + gff_types))
        classes = {name: IntervalSet.from_arrays({contig: tuple(np.array(ivs, dtype=np.int64).T)
                                                  for contig, ivs in raw.get(name, {}).items()})
                   for name in names}
        return cls(classes, contig_lengths)

    @property
    def class_names(self) -> list[str]:
        return list(self._classes)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per class: its intervals (after merging overlapping and adjacent ones) and the bases they cover."""
        return {name: {"intervals": sum(len(bases.arrays(contig)[0]) for contig in bases.contigs), "bases": len(bases)}
                for name, bases in self._classes.items()}

    def mask(self, contig: str, start: int, end: int) -> np.ndarray:
        """bool [end - start, n_classes]: which classes cover each base of contig:[start, end)."""
        if self.contig_lengths is not None:
            check_interval(contig, start, end, self.contig_lengths, "tracks")
        elif not 0 <= start <= end:
            raise RegionError(f"tracks: bad region {contig}:[{start}, {end}) (0-based)")
        out = np.zeros((end - start, len(self._classes)), dtype=bool)
        for c, bases in enumerate(self._classes.values()):
            out[:, c] = bases.mask(contig, start, end)
        return out

    def per_base(self, interval: Interval) -> np.ndarray:
        """float32 [len(interval), n_classes]: the per-base source contract, `mask` as 0/1."""
        return self.mask(interval.contig, interval.start, interval.end).astype(np.float32)
