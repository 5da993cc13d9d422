"""`genoformer score-variants`: a thin Click layer over genoformer.apply.variants."""
from __future__ import annotations

import json

import click

from genoformer.commands.paths import INPUT_FILE, RUN_OR_CHECKPOINT
from genoformer.devices import DEVICES

_file = INPUT_FILE


@click.command("score-variants")
@click.option("--model", required=True, type=RUN_OR_CHECKPOINT,
              help="Run or checkpoint folder: a pattern, per-residue classify, classify (with --window) or mlm "
                   "model. Models that read aligned reads are refused (no reads carry the ALT allele).")
@click.option("--reference", required=True, type=_file, help="Reference FASTA (plain or bgzip) the VCF is on.")
@click.option("--vcf", required=True, type=_file,
              help="Variants: VCF/BCF, plain or bgzipped, any order, no index needed.")
@click.option("--out", required=True, metavar="PREFIX",
              help="Writes PREFIX.vcf.gz (+ .tbi) and PREFIX.tsv.")
@click.option("--window", type=int,
              help="Window in bases centred on each allele  [default: the model's training window; classify "
                   "models: required, the length of the sequences it was trained on]")
@click.option("--aggregate", type=click.Choice(["allele", "window"]), default="allele", show_default=True,
              help="Per-base models: diff of the probabilities averaged over the allele's bases (an SNV: the "
                   "variant base), or summed over each window.")
@click.option("--rc-average", is_flag=True, help="Average with the reverse-complement strand's predictions.")
@click.option("--batch-size", type=int, help="Windows per forward pass  "
                                             "[default: about 32 kb of windows on the CPU, 256 kb on a GPU]")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="auto: a CUDA GPU when there is one, else the CPU.")
@click.option("--hash-seed", type=int, default=0, show_default=True, help="Seed of the LSH rotations (recorded).")
@click.option("--force", is_flag=True, help="Replace existing outputs (only once the new ones are complete).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
def score_variants(**options):
    """Score each ALT allele of a VCF against REF with a trained model.

    Per output class: diff (p_alt - p_ref) and lor (log-odds ratio); for mlm models llr, the
    zero-shot log-likelihood ratio of ALT vs REF with the variant masked (substitutions only).
    Each allele is scored in a window centred on it, shifted near contig ends, never dropped:
    an allele that cannot be scored is written with its reason (INFO GF_STATUS). Outputs are
    renamed into place only when complete; there is no --resume (a killed run leaves nothing:
    run it again). Prints a JSON summary on stdout.
    """
    from genoformer.apply.variants import ScoreConfig
    from genoformer.apply.variants import score_variants as run

    click.echo(json.dumps(run(ScoreConfig(**options))))
