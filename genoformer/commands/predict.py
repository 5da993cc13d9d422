"""`genoformer predict`: a thin Click layer over genoformer.predict.runner."""
from __future__ import annotations

import json

import click

from genoformer.commands.paths import INPUT_FILE, RUN_OR_CHECKPOINT
from genoformer.coords import REGION
from genoformer.devices import DEVICES

_file = INPUT_FILE


@click.command()
@click.option("--model", required=True, type=RUN_OR_CHECKPOINT,
              help="Run folder (its latest checkpoint) or checkpoint folder of a variant/pattern model.")
@click.option("--reference", required=True, type=_file, help="Reference FASTA (plain or bgzip) the model reads.")
@click.option("--bam", type=_file, help="Indexed BAM/CRAM of the sample; required exactly when the model uses reads.")
@click.option("--region", "regions", type=REGION, multiple=True,
              help="samtools-style region, 1-based (chr20:10,000,001-10,100,000); repeat for more. "
                   "Default: every contig.")
@click.option("--regions-bed", type=_file, help="BED file of regions (0-based); adds to --region.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output HDF5 file (see docs/hdf5.md).")
@click.option("--window", type=int, help="Window in bases  [default: the model's training window]")
@click.option("--margin", type=int, help="Bases of context dropped at each window edge  [default: window/4]")
@click.option("--batch-size", type=int, help="Windows per forward pass  [default: about 256 kb of windows]")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option("--hash-seed", type=int, default=0, show_default=True,
              help="Seed of the LSH rotations (recorded in the output; same seed, same predictions).")
@click.option("--rc-average", is_flag=True, help="Also run each window on the reverse strand and average (DNA models).")
@click.option("--resume", is_flag=True, help="Continue the partial output of an interrupted run (same inputs).")
@click.option("--force", is_flag=True, help="Replace an existing output (only once the new one is complete).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
def predict(**options):
    """Per-base predictions of a trained model over whole contigs or regions, written to HDF5.

    Windows overlap by 2 x margin and each keeps its centre, on a grid fixed by the contig, so a
    base's prediction does not depend on the regions asked for. Prints a JSON summary on stdout.
    """
    from genoformer.predict.runner import PredictConfig
    from genoformer.predict.runner import predict as run

    options["regions"] = list(options["regions"])
    summary = run(PredictConfig(**options))
    click.echo(json.dumps({key: summary[key] for key in ("out", "task", "bases", "windows", "seconds",
                                                         "bases_per_s")}))
