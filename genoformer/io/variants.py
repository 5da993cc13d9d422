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
"""
from __future__ import annotations

import copy
import os
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
    else the VCF is "on another reference". `sample` may be omitted for single-sample files.
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
        if reference is not None:
            self.reference_contigs = dict(getattr(reference, "contigs", reference))
            self._check_reference(str(getattr(reference, "path", "(contig lengths given)")))

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
            return [TruthVariant(contig, rec.start, rec.ref, tuple(rec.alts or ()),
                                 tuple(rec.samples[self.sample].get("GT") or ()),
                                 list(rec.filter) in ([], ["PASS"]))
                    for rec in vcf.fetch(contig, start, end)]
        except (ValueError, OSError) as exc:
            raise VariantError(f"{self.path}: cannot read records in {contig}:{start + 1:,}-{end:,} ({exc})") from exc

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
