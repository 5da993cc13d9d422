"""What `genoformer export` writes (ExportConfig), and what its VCF and BED writers share."""
from __future__ import annotations

from dataclasses import dataclass, field

from genoformer.errors import UsageError

MAX_GQ = 99  # the GQ cap


@dataclass
class ExportConfig:
    """What `export` writes; recorded in the VCF header and BED comment line."""
    predictions: str
    vcf: str | None = None  # calls.vcf.gz (bgzip + tabix) or calls.vcf (plain)
    bed: str | None = None  # thresholded runs of every chosen class
    bedgraph: str | None = None  # per-class probability runs; with several classes, one file each
    classes: list[str] = field(default_factory=list)  # classes for BED/bedGraph (default: all)
    threshold: float = 0.5  # VCF: P(non-ref) that calls a base; BED: class probability
    min_gq: int = 0  # VCF: GQ below this -> FILTER LowGQ
    min_deletion_fraction: float = 0.25  # VCF: share of reads deleting a called base that makes it a deletion
    digits: int = 2  # bedGraph: decimals of the rounded probability
    sample: str | None = None  # VCF sample name (default: the BAM's SM, else SAMPLE)
    reference: str | None = None  # default: the reference recorded in the predictions file
    regions: list[str] = field(default_factory=list)  # samtools-style, 1-based; default: everything covered
    force: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not (self.vcf or self.bed or self.bedgraph):
            raise UsageError("nothing to export: give --vcf, --bed and/or --bedgraph")
        if not 0 < self.threshold <= 1:
            raise UsageError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 0 <= self.min_deletion_fraction <= 1:
            raise UsageError(f"min-deletion-fraction must be in [0, 1], got {self.min_deletion_fraction}")
        if not 0 <= self.min_gq <= MAX_GQ:
            raise UsageError(f"min-gq must be between 0 and {MAX_GQ}, got {self.min_gq}")
        if not 0 <= self.digits <= 4:
            raise UsageError(f"digits must be between 0 and 4 (the file stores float16), got {self.digits}")
        if self.vcf and self.vcf.endswith(".bcf"):
            raise UsageError(f"{self.vcf}: BCF output is not supported; name it .vcf.gz",
                             hint="convert afterwards with: bcftools view -Ob")


def one_line(value) -> str:
    """`value` as text fit for one header line."""
    return str(value).replace("\n", " ")
