"""Call sets: the scored alleles of one sample of a VCF/BCF, normalised so two callers' files compare.

Matching is by allele, after a trivial normalisation that needs no reference:
- each called ALT allele of a record is compared on its own (a 1/2 record gives two alleles);
- bases shared at the end of REF and ALT are trimmed, then bases shared at the start (so
  `A -> AT` at 100 and `GA -> GAT` at 99 are the same insertion);
- an equal-length substitution (MNP) is split into its changed bases, each an SNV;
- symbolic (`<DEL>`), breakend, `*` and `.` alleles are not evaluated.
Indels are not left-aligned: two representations of an indel shifted within a repeat do not
match (run `bcftools norm -f REF` on both files first when they come from different callers).

An allele is an SNV when one base is replaced by one base, otherwise an indel. Only PASS (or `.`)
records with a called non-reference allele count; the rest are tallied under `skipped`. With a
reference, REF bases of the first REF_CHECKS records are compared with it, and records on contigs
it lacks are not scored.
"""
from __future__ import annotations

import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pysam

from genoformer.coords import IntervalSet, close_names
from genoformer.errors import VariantError
from genoformer.interrupt import raise_if_terminated
from genoformer.io.variants import REF_CHECKS, check_ref_bases, genotype

KINDS = ("snv", "indel")


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



@dataclass
class CallSet:
    """The scored alleles of one VCF sample: allele -> zygosity ("het" or "hom")."""
    path: str
    sample: str
    alleles: dict[Allele, str]
    skipped: Counter = field(default_factory=Counter)



def open_vcf(path: Path) -> pysam.VariantFile:
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
                 regions: list[IntervalSet] | None = None) -> CallSet:
    """Scored alleles of a VCF/BCF (plain, bgzip; no index needed) for one sample.

    With `reference` (a genoformer Reference), records on contigs it lacks are skipped and the REF
    bases of the first REF_CHECKS others are checked; `regions` keep only alleles inside one
    interval of each.
    """
    path = Path(path)
    vcf = open_vcf(path)
    try:
        sample = _sample(vcf, path, sample)
        alleles: dict[Allele, str] = {}
        skipped: Counter = Counter()
        checked = 0
        try:
            for rec in vcf:
                raise_if_terminated()
                if reference is not None:
                    if rec.contig not in reference.contigs:  # e.g. a genome-wide truth, one chromosome's reference
                        skipped["contig_not_in_reference"] += 1
                        continue
                    if checked < REF_CHECKS:
                        check_ref_bases(path, rec.contig, rec.start, rec.ref, reference)
                        checked += 1
                _add_record(rec, sample, alleles, skipped, regions, path)
        except (ValueError, OSError) as exc:
            raise VariantError(f"{path}: cannot read records ({exc})") from None
    finally:
        vcf.close()
    return CallSet(str(path), sample, alleles, skipped)


def _add_record(rec, sample: str, alleles: dict[Allele, str], skipped: Counter,
                regions: list[IntervalSet] | None, path: Path) -> None:
    gt = genotype(rec, sample, path)
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

