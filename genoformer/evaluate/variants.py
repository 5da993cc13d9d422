"""Variant calls against a truth VCF: TP/FP/FN, precision, recall, F1 and genotype concordance.

Matching is by allele, after a trivial normalisation that needs no reference:
- each called ALT allele of a record is compared on its own (a 1/2 record gives two alleles);
- bases shared at the end of REF and ALT are trimmed, then bases shared at the start (so
  `A -> AT` at 100 and `GA -> GAT` at 99 are the same insertion);
- an equal-length substitution (MNP) is split into its changed bases, each an SNV;
- symbolic (`<DEL>`), breakend, `*` and `.` alleles are not evaluated.
Indels are not left-aligned: two representations of an indel shifted within a repeat do not
match (run `bcftools norm -f REF` on both files first when they come from different callers).

An allele is an SNV when one base is replaced by one base, otherwise an indel. It is a true
positive when the same allele is in both files, whatever the genotype; genotype concordance is
the share of true positives whose zygosity (het, or hom: every allele of the GT is this one)
agrees. Only PASS (or `.`) records with a called non-reference allele count; the rest are
tallied under `skipped`.

Scoring regions: an allele is scored when its reference span lies inside one confident
interval (and inside one `--region`, when given). The span is the replaced or deleted bases;
for an insertion, the two bases around it.

Reference checks: the ##contig lengths of calls and truth (and of `reference`, when given) must
agree on every contig where something is scored ("VCF on another reference", exit 3); elsewhere
a difference is only a warning. With a reference, REF bases of the first REF_CHECKS records of
each file are compared with it, and records on contigs it lacks are not scored.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pysam

from genoformer import __version__
from genoformer.coords import Interval, close_names, merge_intervals, parse_region, read_bed
from genoformer.errors import UsageError, VariantError

log = logging.getLogger(__name__)

KINDS = ("snv", "indel")
REF_CHECKS = 10_000  # records per VCF whose REF is compared with --reference (enough to catch another build)


@dataclass(frozen=True, order=True)
class Allele:
    """One normalised ALT allele: `ref` bases at 0-based `pos` replaced by `alt`.

    An insertion has ref "" (inserted before `pos`), a deletion alt "".
    """
    contig: str
    pos: int
    ref: str
    alt: str

    @property
    def kind(self) -> str:
        return "snv" if len(self.ref) == len(self.alt) == 1 else "indel"

    def span(self) -> tuple[int, int]:
        """Reference bases [start, end) that must be in a scoring region."""
        return (self.pos, self.pos + len(self.ref)) if self.ref else (self.pos - 1, self.pos + 1)


def normalise(contig: str, start: int, ref: str, alt: str) -> list[Allele]:
    """The alleles of one VCF ALT (see the module docstring); [] when nothing is evaluated."""
    if not alt or alt.startswith("<") or alt in ("*", ".") or "[" in alt or "]" in alt:
        return []
    ref, alt = ref.upper(), alt.upper()
    while ref and alt and ref[-1] == alt[-1]:
        ref, alt = ref[:-1], alt[:-1]
    while ref and alt and ref[0] == alt[0]:
        ref, alt, start = ref[1:], alt[1:], start + 1
    if not ref and not alt:
        return []  # ALT equals REF
    if len(ref) == len(alt) > 1:
        return [Allele(contig, start + i, r, a) for i, (r, a) in enumerate(zip(ref, alt)) if r != a]
    return [Allele(contig, start, ref, alt)]


class Regions:
    """Merged intervals per contig; `contains(contig, start, end)` when [start, end) lies inside one."""

    def __init__(self, intervals: Iterable[Interval]):
        self._by_contig: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        merged: dict[str, list[Interval]] = {}
        for iv in merge_intervals(intervals):
            merged.setdefault(iv.contig, []).append(iv)
        for contig, ivs in merged.items():
            self._by_contig[contig] = (np.array([iv.start for iv in ivs]), np.array([iv.end for iv in ivs]))

    def contains(self, contig: str, start: int, end: int) -> bool:
        if contig not in self._by_contig:
            return False
        starts, ends = self._by_contig[contig]
        i = int(np.searchsorted(starts, start, "right")) - 1
        return i >= 0 and end <= ends[i]

    def intervals(self) -> list[Interval]:
        return [Interval(c, int(s), int(e)) for c, (starts, ends) in self._by_contig.items()
                for s, e in zip(starts, ends)]

    def intersect(self, other: Regions) -> Regions:
        """Bases in both (a sweep over the two sorted, disjoint interval lists of each contig)."""
        both = []
        for contig, (starts, ends) in self._by_contig.items():
            if contig not in other._by_contig:
                continue
            o_starts, o_ends = other._by_contig[contig]
            i = j = 0
            while i < len(starts) and j < len(o_starts):
                lo, hi = max(starts[i], o_starts[j]), min(ends[i], o_ends[j])
                if lo < hi:
                    both.append(Interval(contig, int(lo), int(hi)))
                if ends[i] < o_ends[j]:
                    i += 1
                else:
                    j += 1
        return Regions(both)

    @property
    def bases(self) -> int:
        return int(sum((e - s).sum() for s, e in self._by_contig.values()))


@dataclass
class CallSet:
    """The scored alleles of one VCF sample: allele -> zygosity ("het" or "hom")."""
    path: str
    sample: str
    alleles: dict[Allele, str]
    skipped: Counter = field(default_factory=Counter)


# ---------------------------------------------------------------------------------------------
# reading and checking the VCFs


def _open_vcf(path: Path) -> pysam.VariantFile:
    if not path.is_file():
        raise VariantError(f"{path}: no such VCF file")
    try:
        return pysam.VariantFile(str(path))
    except (ValueError, OSError) as exc:
        raise VariantError(f"{path}: not a VCF/BCF file ({exc})") from None


def _sample(vcf: pysam.VariantFile, path: Path, sample: str | None) -> str:
    samples = list(vcf.header.samples)
    if sample is not None:
        if sample not in samples:
            raise VariantError(f"{path}: no sample {sample!r} (has {', '.join(samples[:5]) or 'none'})")
        return sample
    if len(samples) != 1:
        raise VariantError(f"{path}: has {len(samples)} samples ({', '.join(samples[:5])}), need one genotype column",
                           hint="choose one with --calls-sample / --truth-sample")
    return samples[0]


def header_lengths(vcf: pysam.VariantFile) -> dict[str, int]:
    """contig -> length from the ##contig lines that declare one."""
    return {name: c.length for name, c in vcf.header.contigs.items() if c.length is not None}


def length_conflicts(a: Mapping[str, int], a_name: str, b: Mapping[str, int], b_name: str) -> dict[str, str]:
    """contig -> description, for contigs both declare with different lengths.

    Raises VariantError naming `a_name` when both declare contigs but share no name at all.
    """
    if not a or not b:
        return {}  # nothing declared to compare
    if not set(a) & set(b):
        near = [m for n in list(a)[:50] for m in close_names(n, b)]
        guess = f" (did you mean {near[0]}?)" if near else ""
        raise VariantError(f"{a_name}: VCF on another reference than {b_name}: no shared contig names "
                           f"({', '.join(list(a)[:3])} vs {', '.join(list(b)[:3])}){guess}",
                           hint="contig names must match exactly (chr20 and 20 differ)")
    return {n: f"{a_name}: VCF on another reference than {b_name}: {n} is {a[n]:,} bp there, {b[n]:,} in {b_name}"
            for n in a if n in b and a[n] != b[n]}


def read_callset(path: str | os.PathLike, sample: str | None = None, reference=None,
                 regions: list[Regions] | None = None) -> CallSet:
    """Scored alleles of a VCF/BCF (plain, bgzip; no index needed) for one sample.

    With `reference` (a genoformer Reference), records on contigs it lacks are skipped and the REF
    bases of the first REF_CHECKS others are checked; `regions` keep only alleles inside one
    interval of each.
    """
    path = Path(path)
    vcf = _open_vcf(path)
    try:
        sample = _sample(vcf, path, sample)
        alleles: dict[Allele, str] = {}
        skipped: Counter = Counter()
        checked = 0
        try:
            for rec in vcf:
                if reference is not None:
                    if rec.contig not in reference.contigs:  # e.g. a genome-wide truth, one chromosome's reference
                        skipped["contig_not_in_reference"] += 1
                        continue
                    if checked < REF_CHECKS:
                        _check_ref_bases(rec, path, reference)
                        checked += 1
                _add_record(rec, sample, alleles, skipped, regions)
        except (ValueError, OSError) as exc:
            raise VariantError(f"{path}: cannot read records ({exc})") from None
    finally:
        vcf.close()
    return CallSet(str(path), sample, alleles, skipped)


def _check_ref_bases(rec: pysam.VariantRecord, path: Path, reference) -> None:
    where = f"{rec.contig}:{rec.pos}"
    end = rec.start + len(rec.ref)
    if end > reference.contigs[rec.contig]:
        raise VariantError(f"{path}: record at {where} runs past the end of {rec.contig} in {reference.path}: "
                           "VCF on another reference")
    bases = reference.fetch(rec.contig, rec.start, end).tobytes().decode().upper()
    ref = rec.ref.upper()
    if any(r != b and r != "N" and b != "N" for r, b in zip(ref, bases)):
        raise VariantError(f"{path}: REF {rec.ref} at {where} does not match {reference.path} ({bases}): "
                           "VCF on another reference", hint="use the reference the VCF was made on")


def _add_record(rec, sample: str, alleles: dict[Allele, str], skipped: Counter,
                regions: list[Regions] | None) -> None:
    gt = rec.samples[sample].get("GT") or ()
    if not gt or any(a is None for a in gt):
        skipped["missing_genotype"] += 1
        return
    if list(rec.filter) not in ([], ["PASS"]):
        skipped["filtered"] += 1
        return
    called = sorted({a for a in gt if a})
    if not called:
        skipped["hom_ref"] += 1
        return
    alts = rec.alts or ()
    for a in called:
        found = normalise(rec.contig, rec.start, rec.ref, alts[a - 1]) if a <= len(alts) else []
        if not found:
            skipped["not_evaluated_allele"] += 1
        zygosity = "hom" if all(x == a for x in gt) else "het"
        for allele in found:
            if regions and not all(r.contains(allele.contig, *allele.span()) for r in regions):
                skipped["outside_regions"] += 1
            elif allele in alleles:
                skipped["duplicate_allele"] += 1
            else:
                alleles[allele] = zygosity


# ---------------------------------------------------------------------------------------------
# scoring


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    genotype_matches: int = 0  # true positives with the truth's zygosity

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else math.nan

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else math.nan

    @property
    def f1(self) -> float:
        return 2 * self.tp / (2 * self.tp + self.fp + self.fn) if self.tp + self.fp + self.fn else math.nan

    @property
    def genotype_concordance(self) -> float:
        return self.genotype_matches / self.tp if self.tp else math.nan

    def as_dict(self) -> dict:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "precision": self.precision, "recall": self.recall,
                "f1": self.f1, "genotype_matches": self.genotype_matches,
                "genotype_concordance": self.genotype_concordance}


def compare(calls: Mapping[Allele, str], truth: Mapping[Allele, str]) -> dict[str, Counts]:
    """Counts per kind ("snv", "indel") and over "all" alleles."""
    out = {kind: Counts() for kind in (*KINDS, "all")}
    for allele, zygosity in calls.items():
        for c in (out[allele.kind], out["all"]):
            if allele in truth:
                c.tp += 1
                c.genotype_matches += truth[allele] == zygosity
            else:
                c.fp += 1
    for allele in truth:
        if allele not in calls:
            out[allele.kind].fn += 1
            out["all"].fn += 1
    return out


@dataclass
class EvaluateConfig:
    """What `evaluate` compares; saved in the JSON report."""
    calls: str
    truth_vcf: str
    confident_bed: str | None = None
    regions: list[str] = field(default_factory=list)  # samtools-style, 1-based
    reference: str | None = None
    calls_sample: str | None = None
    truth_sample: str | None = None


@dataclass
class EvaluateResult:
    config: EvaluateConfig
    counts: dict[str, Counts]
    skipped: dict[str, dict[str, int]]
    scored_bases: int | None  # bases of the scoring regions (None: whole genome)

    def as_dict(self) -> dict:
        return {"genoformer_version": __version__, "config": dataclasses.asdict(self.config),
                "scored_bases": self.scored_bases,
                **{kind: c.as_dict() for kind, c in self.counts.items()}, "skipped": self.skipped}

    def to_json(self) -> str:
        return json.dumps(json_safe(self.as_dict()), indent=2) + "\n"

    def table(self) -> str:
        """A fixed-width table of the counts (one row per kind)."""
        rows = [f"{'type':<6}{'TP':>8}{'FP':>8}{'FN':>8}{'precision':>11}{'recall':>9}{'F1':>9}  genotype concordance"]
        for kind, c in self.counts.items():
            conc = f"{format_ratio(c.genotype_concordance)} ({c.genotype_matches}/{c.tp})"
            rows.append(f"{kind.upper() if kind == 'snv' else kind:<6}{c.tp:>8}{c.fp:>8}{c.fn:>8}"
                        f"{format_ratio(c.precision):>11}{format_ratio(c.recall):>9}{format_ratio(c.f1):>9}  {conc}")
        return "\n".join(rows)


def format_ratio(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.4f}"


def json_safe(obj):
    """NaN (a ratio with nothing to count) as JSON null."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    return obj


def evaluate(config: EvaluateConfig) -> EvaluateResult:
    """Compare the calls with the truth inside the confident BED and regions (see the module docstring)."""
    calls_path, truth_path = Path(config.calls), Path(config.truth_vcf)
    reference = None
    if config.reference:
        from genoformer.io.fasta import Reference

        reference = Reference(config.reference)
    with _open_vcf(calls_path) as calls_vcf, _open_vcf(truth_path) as truth_vcf:
        calls_lengths, truth_lengths = header_lengths(calls_vcf), header_lengths(truth_vcf)
    conflicts = length_conflicts(calls_lengths, str(calls_path), truth_lengths, str(truth_path))
    if reference is not None:
        for lengths_, path in ((calls_lengths, calls_path), (truth_lengths, truth_path)):
            conflicts = length_conflicts(lengths_, str(path), reference.contigs, str(reference.path)) | conflicts
    lengths = reference.contigs if reference is not None else (truth_lengths or calls_lengths)
    regions: list[Regions] = []
    scored_bases = None
    if config.confident_bed or config.regions:
        if not lengths:
            raise UsageError("the VCFs declare no ##contig lengths to check the regions against",
                             hint="give the reference with --reference")
    if config.confident_bed:
        regions.append(Regions(read_bed(config.confident_bed, lengths)))
    if config.regions:
        regions.append(Regions(parse_region(r, lengths, source="--region") for r in config.regions))
    if regions:
        scored = regions[0]
        for other in regions[1:]:
            scored = scored.intersect(other)
        scored_bases = scored.bases
    truth = read_callset(truth_path, config.truth_sample, reference, regions)
    calls = read_callset(calls_path, config.calls_sample, reference, regions)
    _check_conflicts(conflicts, {a.contig for a in calls.alleles} | {a.contig for a in truth.alleles}
                     | {iv.contig for r in regions for iv in r.intervals()})
    return EvaluateResult(config, compare(calls.alleles, truth.alleles),
                          {"calls": dict(calls.skipped), "truth": dict(truth.skipped)}, scored_bases)


def _check_conflicts(conflicts: dict[str, str], scored_contigs: set[str]) -> None:
    """A contig length mismatch is an error where something is scored, else a warning.

    Truth sets often declare every contig of a neighbouring build (GIAB's hg19-named b37 headers
    give chrM 16,569 bp, hg19 has 16,571): that must not stop a chr20 evaluation.
    """
    for contig, message in conflicts.items():
        if contig in scored_contigs:
            raise VariantError(message, hint="compare calls and truth made on the same reference build")
    if conflicts:
        log.warning("contig lengths differ where nothing is scored (ignored): %s", "; ".join(conflicts.values()))
