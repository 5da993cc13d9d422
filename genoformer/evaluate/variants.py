"""Variant calls against a truth VCF: TP/FP/FN, precision, recall, F1 and genotype concordance.

Both VCFs are read as call sets of normalised alleles (genoformer.evaluate.callsets). An allele
is a true positive when the same allele is in both files, whatever the genotype; genotype
concordance is the share of true positives whose zygosity (het, or hom: every allele of the GT
is this one) agrees.

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
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from genoformer import __version__
from genoformer.coords import IntervalSet, parse_region, read_bed
from genoformer.errors import UsageError, VariantError
from genoformer.evaluate.callsets import KINDS, Allele, header_lengths, length_conflicts, open_vcf, read_callset

log = logging.getLogger(__name__)


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
    with open_vcf(calls_path) as calls_vcf, open_vcf(truth_path) as truth_vcf:
        calls_lengths, truth_lengths = header_lengths(calls_vcf), header_lengths(truth_vcf)
    conflicts = length_conflicts(calls_lengths, str(calls_path), truth_lengths, str(truth_path))
    if reference is not None:
        for lengths_, path in ((calls_lengths, calls_path), (truth_lengths, truth_path)):
            conflicts = length_conflicts(lengths_, str(path), reference.contigs, str(reference.path)) | conflicts
    lengths = reference.contigs if reference is not None else (truth_lengths or calls_lengths)
    regions: list[IntervalSet] = []
    scored_bases = None
    if config.confident_bed or config.regions:
        if not lengths:
            raise UsageError("the VCFs declare no ##contig lengths to check the regions against",
                             hint="give the reference with --reference")
    if config.confident_bed:
        regions.append(IntervalSet(read_bed(config.confident_bed, lengths)))
    if config.regions:
        regions.append(IntervalSet(parse_region(r, lengths, source="--region") for r in config.regions))
    if regions:
        scored = regions[0]
        for other in regions[1:]:
            scored = scored.intersection(other)
        scored_bases = len(scored)
    truth = read_callset(truth_path, config.truth_sample, reference, regions)
    calls = read_callset(calls_path, config.calls_sample, reference, regions)
    _check_conflicts(conflicts, {a.contig for a in calls.alleles} | {a.contig for a in truth.alleles}
                     | {contig for r in regions for contig in r.contigs})
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
