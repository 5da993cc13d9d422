"""`genoformer attribute`: a thin Click layer over genoformer.apply.attribute_run."""
from __future__ import annotations

import json

import click

from genoformer.commands.paths import INPUT_FILE, RUN_OR_CHECKPOINT
from genoformer.coords import REGION
from genoformer.devices import DEVICES

_file = INPUT_FILE


@click.command()
@click.option("--model", required=True, type=RUN_OR_CHECKPOINT,
              help="Run or checkpoint folder: a pattern, per-residue classify or classify model (DNA, no reads).")
@click.option("--reference", required=True, type=_file, help="Reference FASTA (plain or bgzip).")
@click.option("--region", required=True, type=REGION,
              help="samtools-style, 1-based, at most 10,000 bases: chrA:10,001-12,000. A classify model reads it "
                   "as one sequence.")
@click.option("--out", required=True, metavar="PREFIX",
              help="Writes PREFIX.h5, PREFIX.<method>.<class>.bedgraph and PREFIX.<class>.logo.png.")
@click.option("--method", "methods", type=click.Choice(["ism", "grad_input"]), multiple=True,
              help="In-silico mutagenesis and/or gradient x input; repeat  [default: both]")
@click.option("--class", "classes", multiple=True, help="Attribute this class of the model; repeat  [default: all]")
@click.option("--window", type=int, help="Per-base models: window in bases  [default: the model's training window]")
@click.option("--margin", type=int, help="Per-base models: bases dropped at each window edge, as predict  "
                                         "[default: window/4; 0 halves the ISM cost]")
@click.option("--batch-size", type=int, help="Changed windows per forward pass  "
                                             "[default: about 32 kb of windows on the CPU, 256 kb on a GPU]")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="auto: a CUDA GPU when there is one, else the CPU.")
@click.option("--hash-seed", type=int, default=0, show_default=True, help="Seed of the LSH rotations (recorded).")
@click.option("--logo/--no-logo", default=True, show_default=True,
              help="Draw PREFIX.<class>.logo.png.")
@click.option("--logo-width", type=int, default=40, show_default=True, help="Bases shown as letters in the logo.")
@click.option("--force", is_flag=True, help="Replace existing outputs (only once the new ones are complete).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
def attribute(methods, classes, **options):
    """Which bases of a region drive a model's prediction there.

    ISM changes every base to each other base and records the change of the summed predicted
    probability over the region (per class; for a classify model, its class probability);
    gradient x input estimates the same from one backward pass. Per-base importance (minus the
    mean change) goes to bedGraph and a logo picture of its strongest stretch; everything to HDF5.
    Prints a JSON summary on stdout.
    """
    from genoformer.apply.attribute_run import METHODS, AttributeConfig, run_attribute

    config = AttributeConfig(methods=list(methods) or list(METHODS), classes=list(classes), **options)
    click.echo(json.dumps(run_attribute(config)))
