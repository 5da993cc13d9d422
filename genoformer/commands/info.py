"""`genoformer info`: summarise and pre-flight check a reference and optional reads, truth and BED."""
from __future__ import annotations

import json

import click

from genoformer.commands.paths import INPUT_FILE
from genoformer.coords import REGION

_file = INPUT_FILE


@click.command()
@click.option("--reference", required=True, type=_file, help="Reference FASTA (plain or bgzip).")
@click.option("--bam", type=_file, help="Coordinate-sorted, indexed BAM/CRAM.")
@click.option("--vcf", type=_file, help="Indexed truth VCF/BCF (one sample).")
@click.option("--bed", type=_file, help="BED intervals (e.g. confident regions), or GFF3/GTF/UCSC .txt annotation "
              "(counted per feature type, as train --bed reads it).")
@click.option("--region", type=REGION, help="samtools-style region, 1-based: chr20:10,000,001-10,100,000.")
@click.option("--min-mapq", default=0, show_default=True, help="Reads below this MAPQ are not counted.")
@click.option("--k", type=int, help="Also check the sequence as DNA and count k-mer tokens (k 1..8).")
@click.option("--stride", type=int, help="Token stride (default k).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object on stdout.")
def info(reference, bam, vcf, bed, region, min_mapq, k, stride, as_json):
    """Contigs and lengths, N and soft-masked bases, reads and mean depth, variants by type and genotype."""
    from genoformer.info import format_summary, summarize
    from genoformer.io.alignments import ReadFilters

    summary = summarize(reference, bam=bam, vcf=vcf, bed=bed, region=region,
                        filters=ReadFilters(min_mapping_quality=min_mapq), k=k, stride=stride)
    click.echo(json.dumps(summary, indent=2) if as_json else format_summary(summary))
