"""What `genoformer export` writes (ExportConfig), and what its VCF and BED writers share."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from genoformer.errors import UsageError

MAX_GQ = 99  # the GQ cap
MIN_P = 1e-10  # probabilities floored here so QUAL stays finite (<= 100)


def phred(p: np.ndarray | float) -> np.ndarray:
    """-10 log10(p), with p floored at MIN_P."""
    return -10 * np.log10(np.maximum(p, MIN_P))


def genotype_quality(p_called: np.ndarray | float,
                     calibrated: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """GQ: phred of the probability that the called genotype is wrong (through `calibrated`, a calibration's
    map of it, when given), rounded, capped at MAX_GQ."""
    raw = phred(1 - np.asarray(p_called, dtype=np.float64))
    return np.minimum(np.rint(raw if calibrated is None else calibrated(raw)), MAX_GQ).astype(int)


@dataclass
class ExportConfig:
    """What `export` writes; recorded in the VCF header and BED comment line."""
    predictions: str
    vcf: str | None = None  # calls.vcf.gz (bgzip + tabix) or calls.vcf (plain)
    gvcf: str | None = None  # the calls plus reference-confidence blocks (export_gvcf)
    bed: str | None = None  # thresholded runs of every chosen class
    bedgraph: str | None = None  # per-class probability runs; with several classes, one file each
    classes: list[str] = field(default_factory=list)  # classes for BED/bedGraph (default: all)
    threshold: float = 0.5  # VCF: 1 - P(hom_ref) that calls a base; BED: class probability
    min_gq: int = 0  # VCF: GQ below this -> FILTER LowGQ
    digits: int = 2  # bedGraph: decimals of the rounded probability
    sample: str | None = None  # VCF sample name (default: the BAM's SM, else SAMPLE)
    reference: str | None = None  # default: the reference recorded in the predictions file
    bam: str | None = None  # VCF: the reads that pick each call's allele; default: the predicted BAM
    calibration: str | None = None  # VCF: `genoformer calibrate`'s JSON: maps QUAL and GQ
    regions: list[str] = field(default_factory=list)  # samtools-style, 1-based; default: everything covered
    force: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not (self.vcf or self.gvcf or self.bed or self.bedgraph):
            raise UsageError("nothing to export: give --vcf, --gvcf, --bed and/or --bedgraph")
        if not 0 < self.threshold <= 1:
            raise UsageError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 0 <= self.min_gq <= MAX_GQ:
            raise UsageError(f"min-gq must be between 0 and {MAX_GQ}, got {self.min_gq}")
        if not 0 <= self.digits <= 4:
            raise UsageError(f"digits must be between 0 and 4 (the file stores float16), got {self.digits}")
        for path in (self.vcf, self.gvcf):
            if path and path.endswith(".bcf"):
                raise UsageError(f"{path}: BCF output is not supported; name it .vcf.gz",
                                 hint="convert afterwards with: bcftools view -Ob")


def one_line(value) -> str:
    """`value` as text fit for one header line."""
    return str(value).replace("\n", " ")
