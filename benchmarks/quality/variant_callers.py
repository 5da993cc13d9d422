"""The plain variant callers the variant benchmarks run beside genoformer, and the one scorer for all.

- allele fraction: from `Alignments.evidence`, each base whose most frequent non-reference base
  (A/C/G/T counts, base quality >= 13) is at least 20 % of the depth is het, at least 80 %
  hom-alt, with depth >= 5; SNVs only (the rule has no indels);
- bcftools: `bcftools mpileup -f REF -r REGION BAM | bcftools call -mv` (multiallelic caller,
  variant sites only), unfiltered, run through pysam's bundled bcftools (no system bcftools);
- `score`: `genoformer.evaluate.variants.evaluate` against the GIAB truth (or a simulated one),
  inside a confident BED or not, with SNV, insertion, deletion, indel and all-variant counts
  (alleles after normalisation and left-alignment, as `evaluate` counts).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pysam
from pysam import bcftools
from quality_common import BAM, FASTA, TRUTH

from genoformer.coords import parse_region
from genoformer.evaluate.variants import EvaluateConfig, evaluate
from genoformer.io.alignments import Alignments
from genoformer.io.evidence import BASE_COLUMNS, Evidence
from genoformer.io.fasta import Reference

MIN_DEPTH, HET_FRACTION, HOM_FRACTION = 5, 0.2, 0.8
KINDS = ("snv", "insertion", "deletion", "indel", "all")


def allele_fraction_calls(region: str, out: Path, fasta: Path = FASTA, bam: Path = BAM) -> Path:
    """The allele-fraction rule of the module docstring, written as a VCF (sample NA12878)."""
    ref = Reference(fasta)
    iv = parse_region(region, ref.contigs)
    evidence = Alignments(str(bam), ref).evidence(iv.contig, iv.start, iv.end)
    bases = np.frombuffer(b"ACGT", np.uint8)
    ref_codes = np.frombuffer(ref.fetch_interval(iv).tobytes().upper(), np.uint8)
    counts = evidence[:, list(BASE_COLUMNS)]
    depth = evidence[:, Evidence.depth]
    alt_counts = np.where(bases[None, :] == ref_codes[:, None], -1, counts)  # the reference base never wins
    alt = alt_counts.argmax(1)
    fraction = np.where(depth > 0, alt_counts.max(1) / np.maximum(depth, 1), 0)
    called = (depth >= MIN_DEPTH) & (fraction >= HET_FRACTION) & np.isin(ref_codes, bases)
    header = pysam.VariantHeader()
    for name, length in ref.contigs.items():
        header.contigs.add(name, length=length)
    header.add_meta("FORMAT", items=[("ID", "GT"), ("Number", 1), ("Type", "String"), ("Description", "Genotype")])
    header.add_meta("INFO", items=[("ID", "AF"), ("Number", "A"), ("Type", "Float"),
                                   ("Description", "Alt base count / depth")])
    header.add_sample("NA12878")
    with pysam.VariantFile(str(out), "wz", header=header) as vcf:
        for i in np.flatnonzero(called):
            rec = vcf.new_record(contig=iv.contig, start=iv.start + int(i), stop=iv.start + int(i) + 1,
                                 alleles=(chr(ref_codes[i]), chr(bases[alt[i]])), info={"AF": float(fraction[i])})
            rec.samples["NA12878"]["GT"] = (1, 1) if fraction[i] >= HOM_FRACTION else (0, 1)
            vcf.write(rec)
    pysam.tabix_index(str(out), preset="vcf", force=True)
    return out


def bcftools_calls(region: str, out: Path, fasta: Path = FASTA, bam: Path = BAM) -> tuple[Path, str]:
    """(indexed VCF of `bcftools mpileup | call -mv` over `region`, the bcftools version that called)."""
    pileup = out.with_suffix(".mpileup.bcf")
    bcftools.mpileup("-f", str(fasta), "-r", region.replace(",", ""), "-Ou", "-o", str(pileup), str(bam),
                     catch_stdout=False)
    bcftools.call("-mv", "-Oz", "-o", str(out), str(pileup), catch_stdout=False)
    pileup.unlink()
    pysam.tabix_index(str(out), preset="vcf", force=True)
    with pysam.VariantFile(str(out)) as vcf:
        version = next((r.value for r in vcf.header.records if r.key == "bcftools_callVersion"), "unknown")
    return out, f"bcftools {version}"


def score(name: str, vcf: Path, regions: list[str], confident_bed: Path | None, truth: Path = TRUTH,
          fasta: Path = FASTA) -> dict:
    """A row of counts and ratios per kind (snv, insertion, deletion, indel, all) for `name`'s calls against
    the truth VCF (alleles normalised and left-aligned against `fasta`)."""
    result = evaluate(EvaluateConfig(calls=str(vcf), truth_vcf=str(truth), regions=regions, reference=str(fasta),
                                     confident_bed=str(confident_bed) if confident_bed else None))
    row = {"caller": name, "scored_bases": result.scored_bases}
    for kind in KINDS:
        row |= {f"{kind}_{k}": v for k, v in result.counts[kind].as_dict().items()}
    if result.quality is not None:  # calls with QUAL and GQ: does QUAL rank them, does GQ mean what it says
        row |= {"qual_decile_precision": [d["precision"] for d in result.quality.deciles],
                "gq_calibration_error": result.quality.calibration_error,
                "gq_calibration_error_points": result.quality.calibration_error_points,
                "gq_reliability": result.quality.reliability}
    return row
