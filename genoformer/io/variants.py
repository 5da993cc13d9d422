"""Per-base genotype labels from a truth VCF/BCF (e.g. GIAB), masked to confident regions.

Where a variant is placed (0-based reference positions), after trimming the bases REF and ALT
share at the start and then at the end:
- SNV (and each differing base of an MNP): that base;
- deletion: the deleted reference bases (not the VCF anchor base before them);
- insertion: the anchor base the inserted sequence follows (pileup and `Alignments` put the
  read evidence of an insertion on the same base); a complex insertion that also replaces
  bases (AT -> GCC) covers the replaced bases.
Genotype per record: no called alt allele -> hom_ref, some -> het (0/1, 1|0), all -> hom_alt
(1/1, haploid 1, and 1/2: two non-ref alleles, no reference left). Each called alt allele is
placed; where events overlap, the larger code wins (hom_alt > het; deletion > insertion > snv).
Records that fail FILTER or have a missing GT (./.) are not labelled: their bases are masked out,
as truth there is unknown. Symbolic (<DEL>), breakend and `*` alleles are not placed.

Given a `Reference`, every record read is checked against it: a REF that is not the reference's
bases there (N matches anything) means the VCF was made on another reference, and a GT naming an
ALT the record lacks (0/3 with one ALT, which htslib reads as 0/.) is malformed; both are
VariantError naming the file and the record. `check_ref_bases` and `genotype` serve evaluate too.
"""
from __future__ import annotations

import copy
import itertools
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pysam

from genoformer.coords import Interval, IntervalSet, check_interval
from genoformer.errors import RegionError, VariantError
from genoformer.io.sources import UNSCORED, LazyHandle

if TYPE_CHECKING:
    from genoformer.io.fasta import Reference

GENOTYPES = ("hom_ref", "het", "hom_alt")
VARIANT_TYPES = ("none", "snv", "insertion", "deletion")
SNV, INSERTION, DELETION = 1, 2, 3
REF_CHECKS = 10_000  # records whose REF is checked up front (enough to catch another build)
REF_STRETCH = 1 << 20  # reference bases fetched at a time to check the REF of the records in them
LABEL_DTYPE = np.dtype([("genotype", np.int64), ("variant_type", np.int64)])  # per_base: one field per label


def allele_spans(start: int, ref: str, alt: str) -> list[tuple[int, int, int]]:
    """(start, end, variant type) of the bases that one ALT allele changes; [] when nothing is placed."""
    if alt.startswith("<") or alt in ("*", ".") or "[" in alt or "]" in alt:
        return []
    ref, alt = ref.upper(), alt.upper()
    p = 0
    while p < min(len(ref), len(alt)) and ref[p] == alt[p]:
        p += 1
    s = 0
    while s < min(len(ref), len(alt)) - p and ref[-1 - s] == alt[-1 - s]:
        s += 1
    r, a, at = ref[p:len(ref) - s], alt[p:len(alt) - s], start + p
    if len(r) == len(a):
        return [(at + i, at + i + 1, SNV) for i in range(len(r)) if r[i] != a[i]]
    if len(r) > len(a):
        return [(at, at + len(r), DELETION)]
    return [(at, at + len(r), INSERTION)] if r else [(at - 1, at, INSERTION)]


def genotype(rec: pysam.VariantRecord, sample: str, path: str | os.PathLike) -> tuple[int | None, ...]:
    """The GT allele indices of `sample` (None: missing, "."); () without a GT.

    VariantError when an index names an ALT the record lacks: htslib reads 0/3 with one ALT as 0/.
    without a word, so where pysam reports a missing allele the GT as written is read again.
    """
    gt = tuple(rec.samples[sample].get("GT") or ())
    if None in gt:
        fields = str(rec).rstrip("\n").split("\t")
        keys = fields[8].split(":")
        values = fields[9 + list(rec.header.samples).index(sample)].split(":")
        written = values[keys.index("GT")] if "GT" in keys and keys.index("GT") < len(values) else "."
        n_alts = len(rec.alts or ())
        for token in re.split(r"[/|]", written):
            if token.isdigit() and int(token) > n_alts:
                alts = ",".join(rec.alts or ()) or "."
                raise VariantError(f"{path}: record {rec.contig}:{rec.pos}: GT {written} names allele {token} but "
                                   f"the record has {n_alts} ALT allele{'s' * (n_alts != 1)} ({alts})",
                                   hint="GT indices count REF as 0 and the ALT alleles from 1")
    return gt


def check_ref_bases(path: str | os.PathLike, contig: str, start: int, ref: str, reference: Reference,
                    around: tuple[int, str] | None = None) -> None:
    """VariantError naming the file, the record and both bases when REF (at 0-based `start`) is not the
    reference's bases there (N matches any base): the VCF was made on another reference.

    `around` = (start, upper-cased bases) of a stretch of `contig` already fetched; it is used when it
    holds the record, so checking many records costs one fetch.
    """
    where = f"{contig}:{start + 1}"
    end = start + len(ref)
    if end > reference.contigs[contig]:
        raise VariantError(f"{path}: record at {where} runs past the end of {contig} in {reference.path}: "
                           "VCF on another reference")
    if around is not None and around[0] <= start and end <= around[0] + len(around[1]):
        bases = around[1][start - around[0]:end - around[0]]
    else:
        bases = reference.fetch(contig, start, end).tobytes().decode().upper()
    if any(r != b and r != "N" and b != "N" for r, b in zip(ref.upper(), bases)):
        raise VariantError(f"{path}: REF {ref} at {where} does not match {reference.path} ({bases}): "
                           "VCF on another reference", hint="use the reference the VCF was made on")


@dataclass(frozen=True)
class TruthVariant:
    """One VCF record for the chosen sample; `start` is 0-based, `gt` holds allele indices (None = missing)."""
    contig: str
    start: int
    ref: str
    alts: tuple[str, ...]
    gt: tuple[int | None, ...]
    passed: bool

    @property
    def genotype(self) -> int | None:
        """Index into GENOTYPES, or None when the GT is missing or empty."""
        if not self.gt or any(a is None for a in self.gt):
            return None
        n_alt = sum(a > 0 for a in self.gt)
        return 0 if n_alt == 0 else 2 if n_alt == len(self.gt) else 1

    def spans(self) -> list[tuple[int, int, int]]:
        """Placed spans of the called alt alleles (see the module docstring)."""
        called = sorted({a for a in self.gt if a})
        return [span for a in called for span in allele_spans(self.start, self.ref, self.alts[a - 1])]


@dataclass
class VariantLabels:
    """Labels over contig:[start, end): genotype (GENOTYPES index), variant_type (VARIANT_TYPES index), mask."""
    contig: str
    start: int
    end: int
    genotype: np.ndarray      # int8 [L]
    variant_type: np.ndarray  # int8 [L]
    mask: np.ndarray          # bool [L]: scored bases

    def counts(self, interval=None) -> dict[str, int]:
        """Scored bases per genotype and variant type, within `interval` (anything with contig/start/end)."""
        sel = self.mask.copy()
        if interval is not None:
            keep = np.zeros_like(sel)
            if interval.contig == self.contig:
                keep[max(interval.start - self.start, 0):max(interval.end - self.start, 0)] = True
            sel &= keep
        out = {"scored": int(sel.sum())}
        out |= {name: int((self.genotype[sel] == i).sum()) for i, name in enumerate(GENOTYPES)}
        out |= {name: int((self.variant_type[sel] == i).sum()) for i, name in enumerate(VARIANT_TYPES) if i}
        return out


class TruthVariants(LazyHandle):
    """An indexed truth VCF/BCF for one sample.

    `reference` (a `Reference` or contig -> length mapping) is checked against the VCF's
    ##contig lines: shared names must have equal lengths and at least one must be shared,
    else the VCF is "on another reference". With a `Reference`, the REF of every record read is
    also compared with its bases (one fetch per region read). `sample` may be omitted for
    single-sample files.
    The pysam handle opens lazily per process, so DataLoader workers each open their own.

    As a per-base source (genoformer.io.sources), `per_base` gives the labels of each base as a
    structured array (LABEL_DTYPE), UNSCORED where truth is unknown or outside the confident
    regions bound by `scored_in`.
    """
    pad_value = UNSCORED
    confident: IntervalSet | None = None  # per_base scores only these bases; None: every base

    def __init__(self, path: str | os.PathLike, reference: Reference | Mapping[str, int] | None = None,
                 sample: str | None = None):
        self.path = Path(path)
        vcf = self._open()
        samples = list(vcf.header.samples)
        if sample is None and len(samples) != 1:
            raise VariantError(f"{self.path}: has {len(samples)} samples ({', '.join(samples[:5])}), "
                               "need exactly one genotype column", hint="name the truth sample")
        if sample is not None and sample not in samples:
            raise VariantError(f"{self.path}: no sample {sample!r} (has {', '.join(samples[:5])})")
        self.sample = sample or samples[0]
        self.contigs: dict[str, int | None] = {n: c.length for n, c in vcf.header.contigs.items()}
        self.reference_contigs: dict[str, int] | None = None
        self.reference = reference if hasattr(reference, "fetch") else None  # REF bases checked against it
        if reference is not None:
            self.reference_contigs = dict(getattr(reference, "contigs", reference))
            self._check_reference(str(getattr(reference, "path", "(contig lengths given)")))
        if self.reference is not None:
            self._check_first_records(vcf)

    def _new_handle(self) -> pysam.VariantFile:
        if not self.path.is_file():
            raise VariantError(f"{self.path}: no such file")
        try:
            vcf = pysam.VariantFile(str(self.path))
        except (ValueError, OSError) as exc:
            raise VariantError(f"{self.path}: not a VCF/BCF file ({exc})") from exc
        if vcf.index is None:
            vcf.close()
            raise VariantError(f"{self.path}: no index (.tbi/.csi) found next to the file",
                               hint=f"bgzip the VCF if needed, then: bcftools index -t {self.path}")
        return vcf

    def _check_reference(self, ref_name: str) -> None:
        ref = self.reference_contigs
        declared = {n: ln for n, ln in self.contigs.items() if ln is not None}
        if not declared:
            return  # no ##contig lengths to compare
        differ = [f"{n} ({ref[n]:,} bp in the reference, {declared[n]:,} in the VCF)"
                  for n in ref if n in declared and declared[n] != ref[n]]
        if differ or not any(n in self.contigs for n in ref):
            detail = ("; ".join(differ[:5]) if differ else
                      f"no shared contig names (reference {', '.join(list(ref)[:3])}; VCF {', '.join(list(declared)[:3])})")
            raise VariantError(f"{self.path}: VCF on another reference than {ref_name}: {detail}",
                               hint="use the truth set for the reference build the reads were aligned to")

    def _check_first_records(self, vcf: pysam.VariantFile) -> None:
        """The REF of the first REF_CHECKS records on the reference's contigs, so a truth set of another
        build fails at once, before any window is read (records read later are all checked too)."""
        by_contig: dict[str, list[TruthVariant]] = {}
        try:
            for rec in itertools.islice((r for r in vcf if r.contig in self.reference.contigs), REF_CHECKS):
                by_contig.setdefault(rec.contig, []).append(TruthVariant(rec.contig, rec.start, rec.ref, (), (), True))
        except (ValueError, OSError) as exc:
            raise VariantError(f"{self.path}: cannot read records ({exc})") from exc
        for contig, found in by_contig.items():
            self._check_ref_bases(contig, found)

    def _check_region(self, contig: str, start: int, end: int) -> None:
        if self.reference_contigs is not None:
            check_interval(contig, start, end, self.reference_contigs, str(self.path))
        elif not 0 <= start <= end:
            raise RegionError(f"{self.path}: bad region {contig}:[{start}, {end}) (0-based)")

    def records(self, contig: str, start: int, end: int) -> list[TruthVariant]:
        """Records overlapping the 0-based half-open region (none when the VCF lacks the contig)."""
        self._check_region(contig, start, end)
        vcf = self._open()
        if contig not in vcf.header.contigs and contig not in vcf.index:
            return []
        try:
            found = [TruthVariant(contig, rec.start, rec.ref, tuple(rec.alts or ()),
                                  genotype(rec, self.sample, self.path), list(rec.filter) in ([], ["PASS"]))
                     for rec in vcf.fetch(contig, start, end)]
        except (ValueError, OSError) as exc:
            raise VariantError(f"{self.path}: cannot read records in {contig}:{start + 1:,}-{end:,} ({exc})") from exc
        if self.reference is not None:
            self._check_ref_bases(contig, found)
        return found

    def _check_ref_bases(self, contig: str, found: list[TruthVariant]) -> None:
        """Every record's REF against the reference, fetched a stretch of at most REF_STRETCH bases at a time."""
        length, around = self.reference.contigs[contig], (0, "")
        for v in found:  # in position order, as fetched
            end = v.start + len(v.ref)
            if end > around[0] + len(around[1]) and end <= length:
                stop = min(max(v.start + REF_STRETCH, end), length)
                around = (v.start, self.reference.fetch(contig, v.start, stop).tobytes().decode().upper())
            check_ref_bases(self.path, contig, v.start, v.ref, self.reference, around)

    def labels(self, contig: str, start: int, end: int,
               confident: IntervalSet | Iterable[Interval] | None = None) -> VariantLabels:
        """Labels for contig:[start, end); only bases inside `confident` intervals are scored when given."""
        n = end - start
        genotype = np.zeros(n, dtype=np.int8)
        vtype = np.zeros(n, dtype=np.int8)
        if confident is None:
            mask = np.ones(n, dtype=bool)
        else:
            confident = confident if isinstance(confident, IntervalSet) else IntervalSet(confident)
            mask = confident.mask(contig, start, end)
        for v in self.records(contig, start, end):
            g, spans = v.genotype, v.spans()
            if g is None or not v.passed:
                for s, e in [(v.start, v.start + len(v.ref))] + [(s, e) for s, e, _ in spans]:
                    mask[max(s - start, 0):max(e - start, 0)] = False
                continue
            for s, e, t in spans:
                sl = slice(max(s - start, 0), max(e - start, 0))
                genotype[sl] = np.maximum(genotype[sl], g)
                vtype[sl] = np.maximum(vtype[sl], t)
        return VariantLabels(contig, start, end, genotype, vtype, mask)

    def scored_in(self, confident: IntervalSet | Iterable[Interval]) -> TruthVariants:
        """This truth set with `per_base` scoring only bases inside `confident` (a copy; its own handle)."""
        scored = copy.copy(self)
        scored.confident = confident if isinstance(confident, IntervalSet) else IntervalSet(confident)
        return scored

    def per_base(self, interval: Interval) -> np.ndarray:
        """LABEL_DTYPE [len(interval)]: GENOTYPES and VARIANT_TYPES indices, UNSCORED at unscored bases."""
        labels = self.labels(interval.contig, interval.start, interval.end, self.confident)
        out = np.full(len(interval), UNSCORED, dtype=LABEL_DTYPE)
        for name in LABEL_DTYPE.names:
            out[name][labels.mask] = getattr(labels, name)[labels.mask]
        return out
