"""`genoformer predict`: a thin Click layer over genoformer.predict.runner (per base along a reference)
and genoformer.apply.sequences (--sequences: classify models on new sequences)."""
from __future__ import annotations

import json

import click

from genoformer.commands.paths import INPUT_FILE, RUN_OR_CHECKPOINT
from genoformer.coords import REGION
from genoformer.devices import DEVICES
from genoformer.errors import UsageError

_file = INPUT_FILE


@click.command()
@click.option("--model", required=True, type=RUN_OR_CHECKPOINT,
              help="Run folder (its latest checkpoint) or checkpoint folder: a variant, pattern or per-residue "
                   "classify model with --reference; a classify model with --sequences.")
@click.option("--reference", type=_file, help="Reference FASTA (plain or bgzip) the model reads.")
@click.option("--sequences", type=_file,
              help="Instead of --reference, for classify models: FASTA, gzip FASTA or CSV/TSV (a seq column; "
                   "label optional) of sequences to label, each at most the model's window long (longer ones "
                   "are refused, not cut). Writes --out (HDF5) and beside it OUT.tsv (one label per sequence) "
                   "or OUT.labels.fa (one per residue).")
@click.option("--label-field", default="label", show_default=True,
              help="--sequences: CSV column or FASTA header key of labels to copy to the outputs, if present.")
@click.option("--bam", type=_file, help="Indexed BAM/CRAM of the sample; required exactly when the model uses reads.")
@click.option("--region", "regions", type=REGION, multiple=True,
              help="samtools-style region, 1-based (chr20:10,000,001-10,100,000); repeat for more. "
                   "Default: every contig.")
@click.option("--regions-bed", type=_file, help="BED file of regions (0-based); adds to --region.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="Output HDF5 file (see docs/hdf5.md).")
@click.option("--window", type=int, help="Window in bases  [default: the model's training window]")
@click.option("--margin", type=int, help="Bases of context dropped at each window edge  [default: window/4]")
@click.option("--batch-size", type=int, help="Windows (--sequences: sequences) per forward pass  "
                                             "[default: about 32 kb of windows on the CPU, 256 kb on a GPU; 64 kb "
                                             "of sequences]")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="auto: a CUDA GPU when there is one, else the CPU.")
@click.option("--hash-seed", type=int, default=0, show_default=True,
              help="Seed of the LSH rotations (recorded in the output; same seed, same predictions).")
@click.option("--rc-average", is_flag=True, help="Also run each window on the reverse strand and average (DNA models).")
@click.option("--resume", is_flag=True, help="Continue the partial output of an interrupted run (same inputs).")
@click.option("--force", is_flag=True, help="Replace an existing output (only once the new one is complete).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
def predict(sequences, label_field, **options):
    """Per-base predictions of a trained model over whole contigs or regions, written to HDF5;
    or, with --sequences, a classify model's labels for new sequences.

    Windows overlap by 2 x margin and each keeps its centre, on a grid fixed by the contig, so a
    base's prediction does not depend on the regions asked for. Prints a JSON summary on stdout.
    """
    if sequences:
        _predict_sequences(sequences, label_field, options)
        return
    from genoformer.predict.runner import PredictConfig
    from genoformer.predict.runner import predict as run

    options["regions"] = list(options["regions"])
    summary = run(PredictConfig(**options))
    click.echo(json.dumps({key: summary[key] for key in ("out", "task", "bases", "windows", "seconds",
                                                         "bases_per_s")}))


def _predict_sequences(sequences: str, label_field: str, options: dict) -> None:
    from genoformer.apply.sequences import SequencesConfig, predict_sequences

    unused = [name for name in ("reference", "bam", "regions", "regions_bed", "window", "margin", "resume",
                                "rc_average") if options[name]]
    if unused:
        raise UsageError(f"--{unused[0].replace('_', '-')} does not go with --sequences (a classify model labels "
                         "whole sequences, as given)")
    summary = predict_sequences(SequencesConfig(
        model=options["model"], sequences=sequences, out=options["out"], label_field=label_field,
        batch_size=options["batch_size"], device=options["device"], hash_seed=options["hash_seed"],
        force=options["force"], progress=options["progress"]))
    click.echo(json.dumps(summary))
