"""`genoformer train`: a thin Click layer over genoformer.train (options override a --config recipe)."""
from __future__ import annotations

import json
import os

import click

from genoformer.devices import DEVICES
from genoformer.errors import UsageError
from genoformer.tasks import TASKS, TRAIN_TASKS

_file = click.Path(exists=True, dir_okay=False)
_regions_help = "Region strings (chr20:10,000,001-10,100,000) or BED files; repeat for more."


@click.command()
@click.option("--task", type=click.Choice(TRAIN_TASKS), help="What to train (default mlm): " +
              ", ".join(f"{name} ({TASKS[name].about})" for name in TRAIN_TASKS) + ".")
@click.option("--reference", type=_file, help="Reference FASTA (plain or bgzip).")
@click.option("--bam", type=_file, help="Indexed BAM/CRAM: read evidence fused into the tokens (variant, pattern).")
@click.option("--truth-vcf", type=_file, help="Indexed truth VCF/BCF giving genotype labels (variant).")
@click.option("--confident-bed", type=_file, help="Score the variant loss only inside these regions.")
@click.option("--bed", type=_file, multiple=True, help="BED/GFF/GTF class tracks (pattern); none: soft-masked repeats.")
@click.option("--train-regions", multiple=True, help=_regions_help + " Default: the whole reference.")
@click.option("--val-regions", multiple=True, help=_regions_help + " Must not overlap the training regions.")
@click.option("--sequences", type=_file, help="classify: labelled sequences, a seq,label CSV/TSV or a FASTA "
              "with '>id label=X' or '>id|X' headers (plain or gzip).")
@click.option("--val-sequences", type=_file, help="classify: validation sequences (same form); "
              "default: --val-fraction of --sequences.")
@click.option("--val-fraction", type=float, help="classify: seeded, stratified share held out for validation "
              "(default 0.1; 0: none).")
@click.option("--val-tag", help="classify: validate on the FASTA records tagged KEY=VALUE (e.g. VALIDATION=True).")
@click.option("--exclude-tag", help="classify: leave out the FASTA records tagged KEY=VALUE (e.g. SET=test).")
@click.option("--label-field", help="classify: CSV column or FASTA header key of the label (default label).")
@click.option("--residue-labels", type=_file, help="classify: FASTA of one label letter per residue, "
              "ids as in --sequences (FLIP/NetSurfP style).")
@click.option("--residue-mask", type=_file, help="classify: FASTA of 0/1 per residue; 0 residues are not scored.")
@click.option("--per-residue/--per-sequence", default=None, help="classify: one label per residue or per "
              "sequence (default: from the labels).")
@click.option("--alphabet", type=click.Choice(["dna", "protein"]), help="Sequence alphabet (mlm, classify; "
              "default: dna, or detected from --sequences).")
@click.option("--window", type=int, help="Window in bases (default 1,000,000); classify: the longest sequence "
              "(longer ones are cut).")
@click.option("--k", type=int, help="k-mer size (default 6 for DNA, 1 for protein).")
@click.option("--stride", type=int, help="Token stride (default k).")
@click.option("--d-model", type=int, help="Model width (default 256; a recipe's model section may hold these).")
@click.option("--depth", type=int, help="Layers (default 6).")
@click.option("--heads", type=int, help="Attention heads (default 4; d-model / heads must be even).")
@click.option("--bucket-size", type=int, help="LSH bucket size: keys per query = 2 x bucket size (default 64).")
@click.option("--n-hashes", type=int, help="LSH hashing rounds (default 4).")
@click.option("--attention", help="lsh, local, full, or one per layer: lsh,local,lsh.")
@click.option("--window-size", type=int, help="Local attention block (default: bucket-size, the keys per query "
              "of LSH).")
@click.option("--reversible/--no-reversible", default=None, help="Reversible residuals: activation memory flat "
              "in depth (default reversible).")
@click.option("--ff-mult", type=int, help="Feed-forward width as a multiple of d-model (default 4).")
@click.option("--ff-chunks", type=int, help="Run the feed-forward over at least this many sequence chunks "
              "(default 1).")
@click.option("--dropout", type=float, help="Dropout in attention, feed-forward, stem and decoder (default 0).")
@click.option("--causal/--bidirectional", default=None, help="Attend only to earlier tokens (default "
              "bidirectional).")
@click.option("--stem/--no-stem", default=None, help="Per-base convolutions over bases, soft mask and reads, pooled "
              "onto the tokens (default on).")
@click.option("--stem-width", type=int, help="Channels of the stem (default 64).")
@click.option("--decoder/--no-decoder", default=None, help="Per-base decoder back to 1 bp (default on; off: each "
              "token projected to k x classes; mlm: masked k-mers as targets).")
@click.option("--decoder-width", type=int, help="Channels of the decoder (default 64).")
@click.option("--decoder-depth", type=int, help="Convolution blocks of the decoder (default 2).")
@click.option("--rc-augment/--no-rc-augment", default=None, help="Train on the reverse strand of half the "
              "windows (DNA; default off).")
@click.option("--shift-augment", type=int, help="Shift each training item by 0..N bases (default 0).")
@click.option("--class-weights", help="variant: loss weight per genotype: none (default), balanced "
              "(inverse frequency over the scored training bases) or hom_ref,het,hom_alt numbers (1,50,50). "
              "pattern: none (default) or balanced (each class's bases weighted n_negative / n_positive).")
@click.option("--max-steps", type=int)
@click.option("--stop-after", type=int, help="Stop with a checkpoint at this step "
              "(the schedule still spans max-steps).")
@click.option("--lr", type=float, help="Peak learning rate (linear warm-up, then cosine decay).")
@click.option("--warmup-steps", type=int, help="Linear warm-up steps (default max-steps / 10).")
@click.option("--weight-decay", type=float, help="AdamW weight decay of matrices and embeddings (default 0.01).")
@click.option("--batch-size", type=int)
@click.option("--grad-accum", type=int, help="Micro-batches per optimizer step.")
@click.option("--device", type=click.Choice(DEVICES))
@click.option("--seed", type=int)
@click.option("--val-every", type=int, help="Validate every N steps.")
@click.option("--val-windows", type=int, help="Validate on the first N windows tiling --val-regions (default 8).")
@click.option("--ckpt-every", type=int, help="Checkpoint every N steps.")
@click.option("--out", type=click.Path(file_okay=False), help="Run folder (default ./run).")
@click.option("--resume", type=click.Path(), help="Continue the run in this folder exactly.")
@click.option("--init-from", type=click.Path(), help="Initialise the encoder from this (mlm) checkpoint.")
@click.option("--config", "recipe", type=_file, help="YAML/TOML recipe; flags override it; unknown keys rejected.")
@click.option("--progress/--no-progress", default=None, help="Progress bar on stderr.")
@click.option("--dry-run", is_flag=True, help="Check the config and inputs, print the resolved config as JSON "
              "with the number of parameters, train nothing.")
def train(recipe, dry_run, **options):
    """Train a Reformer on windows of a reference (+ reads, truth variants, tracks) or on labelled
    sequences (classify); writes a run folder."""
    from genoformer.train import RESUME_OVERRIDES, TrainConfig, resume
    from genoformer.train import dry_run as check
    from genoformer.train import train as run
    from genoformer.train.recipes import read_recipe, with_flags

    given = {key: value for key, value in options.items() if value is not None and value != ()}
    for key in ("bed", "train_regions", "val_regions"):
        if key in given:
            given[key] = list(given[key])
    if isinstance(given.get("attention"), str) and "," in given["attention"]:
        given["attention"] = [kind.strip() for kind in given["attention"].split(",")]
    if "resume" in given:
        if dry_run:
            raise UsageError("--dry-run checks a new run; it does not combine with --resume")
        extra = sorted(set(given) - set(RESUME_OVERRIDES) - {"resume"})
        if extra or recipe:
            bad = "--config" if recipe else "--" + extra[0].replace("_", "-")
            raise UsageError(f"{bad} cannot change a resumed run; only "
                             f"{', '.join('--' + k.replace('_', '-') for k in RESUME_OVERRIDES)} may be given")
        summary = resume(given.pop("resume"), **given)
    else:
        config = TrainConfig.from_dict(with_flags(read_recipe(recipe) if recipe else {}, given))
        if dry_run:
            click.echo(json.dumps(check(config), indent=2))
            return
        summary = run(config)
    if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from rank 0 only
        click.echo(json.dumps({key: summary[key] for key in ("task", "step", "final_loss", "best", "checkpoint")}))
