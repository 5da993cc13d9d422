# Parse-time set-up: the sample table, the reference's contigs and the shard plan.
# Everything here runs when Snakemake reads the workflow, so it stays cheap: the reference is
# validated and indexed once by genoformer (the scan is cached by size and mtime), and shards
# are computed from its contig lengths, not from the sequence.

import csv
import re
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from genoformer.coords import parse_region, read_bed
from genoformer.errors import GenoformerError
from genoformer.io.fasta import Reference
from genoformer.predict.shards import plan_shards

# the index htslib finds beside a BAM or CRAM, in the order it looks
INDEX_SUFFIXES = {".bam": (".bam.bai", ".bai", ".bam.csi", ".csi"), ".cram": (".cram.crai", ".crai")}


def read_samples(path):
    """Rows of the sample table, each validated against samples.schema.yaml (defaults filled in)."""
    with open(path, newline="") as fh:
        lines = [line for line in fh if line.strip() and not line.startswith("#")]
    samples = {}
    for row in csv.DictReader(lines, delimiter="\t"):
        row = {k.strip(): v.strip() for k, v in row.items() if k and v and v.strip()}  # blank cell = not given
        validate(row, "../config/samples.schema.yaml")
        if row["sample"] in samples:
            raise WorkflowError(f"{path}: sample {row['sample']!r} is listed twice")
        reads = Path(row["reads"])
        if reads.suffix not in INDEX_SUFFIXES:
            raise WorkflowError(f"{path}: reads of {row['sample']} must be .bam or .cram, got {reads.name}")
        for key in ("reads", "truth_vcf", "confident_bed"):
            if key in row and not Path(row[key]).is_file():
                raise WorkflowError(f"{path}: {key} of sample {row['sample']} not found: {row[key]}")
        samples[row["sample"]] = row
    if not samples:
        raise WorkflowError(f"{path}: no samples (a header line `sample<TAB>reads...` and one row per sample)")
    return samples


def existing_index(reads):
    """The index beside `reads`, or None (then the workflow links the reads and indexes the link)."""
    stem = str(reads)[: -len(Path(reads).suffix)]
    return next((stem + s for s in INDEX_SUFFIXES[Path(reads).suffix] if Path(stem + s).is_file()), None)


def plan():
    """(contig lengths, target intervals or None, shards) for the configured reference and regions."""
    try:
        contigs = Reference(config["reference"]).contigs
        targets = None
        if config["regions"]:
            targets = read_bed(config["regions"], contigs)
        elif config["contigs"]:
            targets = [parse_region(name, contigs, source="config contigs") for name in config["contigs"]]
        return contigs, targets, plan_shards(contigs, config["shard_size"], targets)
    except GenoformerError as err:
        raise WorkflowError(f"{err}" + (f" ({err.hint})" if err.hint else "")) from None


SAMPLES = read_samples(config["samples"])
CONTIGS, TARGETS, SHARDS = plan()
SHARD_BY_NAME = {shard.name: shard for shard in SHARDS}
PREDICTED = [iv for shard in SHARDS for iv in shard.intervals]


# ---- input functions and params


def reads(wildcards):
    """What predict reads: the sample's BAM/CRAM where it is indexed, else the indexed link under results/."""
    path = SAMPLES[wildcards.sample]["reads"]
    if existing_index(path):
        return path
    return f"results/reads/{wildcards.sample}{Path(path).suffix}"


def reads_index(wildcards):
    path = SAMPLES[wildcards.sample]["reads"]
    found = existing_index(path)
    if found:
        return found
    suffix = Path(path).suffix
    return f"results/reads/{wildcards.sample}{suffix}{'.bai' if suffix == '.bam' else '.crai'}"


def shard_intervals(wildcards):
    return [(iv.contig, iv.start, iv.end) for iv in SHARD_BY_NAME[wildcards.shard].intervals]


def shard_files(wildcards):
    return expand("results/{sample}/shards/{shard}.h5", sample=wildcards.sample, shard=SHARD_BY_NAME)


def expectation_args(wildcards):
    """What the merged file must cover: the configured regions BED, contigs, or every contig."""
    if config["regions"]:
        return f"--expect-regions {shlex.quote(config['regions'])}"
    if config["contigs"]:
        return " ".join(f"--expect-region {shlex.quote(c)}" for c in config["contigs"])
    return "--expect-contigs"


def final_outputs():
    """What `all` builds.  Shards are listed too: Snakemake (>= 7.7) does not remake a deleted file
    that only feeds outputs which still exist, so deleting one shard would otherwise change nothing;
    listed, it is predicted again and its sample merged, exported and evaluated again."""
    files = []
    for sample, row in SAMPLES.items():
        files += expand("results/{sample}/shards/{shard}.h5", sample=sample, shard=SHARD_BY_NAME)
        files += [f"results/{sample}/{sample}.h5", f"results/{sample}/{sample}.vcf.gz",
                  f"results/{sample}/{sample}.bed"]
        if "truth_vcf" in row:
            files.append(f"results/{sample}/evaluation.json")
    return files


wildcard_constraints:
    sample="|".join(re.escape(s) for s in SAMPLES),
    shard="|".join(re.escape(s) for s in SHARD_BY_NAME),
