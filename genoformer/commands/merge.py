"""`genoformer merge`: gather one sample's prediction shards into one HDF5 file (see genoformer.predict.merge)."""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from genoformer.commands.paths import INPUT_FILE
from genoformer.coords import REGION


@click.command()
@click.argument("shards", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path),
                metavar="SHARD.h5...")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path), metavar="SAMPLE.h5",
              help="Merged predictions file (written to a temp name, renamed when complete).")
@click.option("--expect-regions", "expect_bed", type=INPUT_FILE, metavar="BED",
              help="Refuse unless every base of these BED intervals (0-based) is covered by a shard.")
@click.option("--expect-region", "expect_regions", multiple=True, type=REGION, metavar="REGION",
              help="Refuse unless this region (1-based, e.g. chr20:10,000,001-10,100,000) is covered; repeatable.")
@click.option("--expect-contigs", is_flag=True,
              help="Refuse unless every base of every contig of the reference is covered.")
@click.option("--force", is_flag=True, help="Replace SAMPLE.h5 if it exists (only once the new file is complete).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
def merge(shards: tuple[Path, ...], out: Path, expect_bed: str | None, expect_regions: tuple[str, ...],
          expect_contigs: bool, force: bool, progress: bool) -> None:
    """Merge prediction shards of one sample into one file.

    Refuses (exit 3, naming the shard or shards) unless all shards are complete and come from
    the same model, reference, hash seed, window, margin and reads, no base is covered twice,
    and the expected regions (if given) are covered.
    """
    from genoformer.predict.merge import MergeConfig
    from genoformer.predict.merge import merge as merge_shards

    config = MergeConfig(shards=tuple(map(str, shards)), out=str(out), expect_regions=expect_regions,
                         expect_bed=expect_bed, expect_contigs=expect_contigs, force=force, progress=progress)
    result = merge_shards(config, command=shlex.join(["genoformer", *sys.argv[1:]]))
    bases = sum(result.covered.values())
    click.echo(f"merged {result.shards} shards into {result.out}: {bases:,} bases covered "
               f"on {sum(1 for n in result.covered.values() if n)} contigs")
