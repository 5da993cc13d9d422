"""`genoformer buckets`: LSH buckets and attended positions over a region, as HDF5, BED, TSV and pictures."""
from __future__ import annotations

import click

from genoformer.commands.paths import INPUT_FILE, RUN_OR_CHECKPOINT
from genoformer.coords import REGION
from genoformer.devices import DEVICES

_file = INPUT_FILE


@click.command()
@click.option("--model", required=True, type=RUN_OR_CHECKPOINT,
              help="Run folder (its latest checkpoint) or checkpoint folder.")
@click.option("--reference", required=True, type=_file, help="Reference FASTA (plain or bgzip).")
@click.option("--bam", type=_file, help="Indexed BAM/CRAM, for models that fuse read evidence.")
@click.option("--region", required=True, type=REGION,
              help="samtools-style, 1-based: chr20:10,000,001-10,020,000; a region longer than the model's window "
                   "is cut into windows (files per window in window_N/, drawn side by side).")
@click.option("--layer", "layers", type=int, multiple=True, help="LSH layer (0-based); repeat. Default: all.")
@click.option("--head", "heads", type=int, multiple=True, help="Attention head (0-based); repeat. Default: all.")
@click.option("--round", "rounds", type=int, multiple=True, help="Hashing round (0-based); repeat. Default: all.")
@click.option("--query", "queries", type=REGION, multiple=True, metavar="CONTIG:POS",
              help="A base, CONTIG:POSITION (1-based): plot its top attended positions; repeat.")
@click.option("--tracks", type=_file, multiple=True,
              help="BED/GFF3/GTF/UCSC .txt annotation drawn under the buckets and scored for enrichment; repeat.")
@click.option("--hash-seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the hashing rotations (layer i uses seed + i).")
@click.option("--top-k", type=click.IntRange(min=1), default=8, show_default=True,
              help="Attended positions kept per query token.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--bgzip", is_flag=True, help="Write buckets.bed.gz with a tabix index instead of buckets.bed.")
@click.option("--plots/--no-plots", default=True, show_default=True, help="PNG/SVG pictures (need matplotlib).")
@click.option("--force", is_flag=True, help="Overwrite outputs already in --out.")
def buckets(layers, heads, rounds, queries, tracks, **options):
    """Which tokens of a region each LSH layer hashes together, and what chosen bases attend to.

    Writes buckets.h5, buckets.bed, summary.tsv, buckets.png/.svg and query_*.png/.svg into --out
    (see docs/buckets.md) and prints where each file is. The region is read inside one model window;
    a longer region window by window, each window's files in window_N/.
    """
    from genoformer.buckets.run import BucketsConfig, run_buckets

    config = BucketsConfig(layers=list(layers) or None, heads=list(heads) or None, rounds=list(rounds) or None,
                           queries=list(queries), tracks=list(tracks), **options)
    for what, paths in run_buckets(config).items():
        for path in paths:
            click.echo(f"{what}\t{path}")
