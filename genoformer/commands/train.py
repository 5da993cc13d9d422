"""`genoformer train`: a thin Click layer over genoformer.train (options override a --config recipe)."""
from __future__ import annotations

import json
import os

import click

from genoformer.commands.paths import INPUT_FILE
from genoformer.devices import DEVICES
from genoformer.errors import UsageError
from genoformer.io.evidence import EVIDENCE_SCALINGS
from genoformer.tasks import TASKS, TRAIN_TASKS

_file = INPUT_FILE
_regions_help = "Region strings (chr20:10,000,001-10,100,000) or BED files; repeat for more."


def _defaults() -> dict[str, str]:
    """Each option's default as --help shows it, read from TrainConfig, its model section and the task registry
    (the options themselves default to None, so that only the flags given override a --config recipe)."""
    import dataclasses

    from genoformer.train.config import ModelConfig, TrainConfig

    values = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}
    values |= {f.name: f.default for f in dataclasses.fields(ModelConfig)}
    shown = {name: "none" if value is None else str(value).lower() if isinstance(value, bool) else
             f"{value:,}" if isinstance(value, int) else str(value) for name, value in values.items()}
    per_task = {option: ", ".join(f"{value} for {name}" for name, task in TASKS.items()
                                  for key, value in task.defaults.items() if key == option)
                for option in {key for task in TASKS.values() for key in task.defaults}}
    return shown | {
        "k": f"{per_task['k']}; else 6 for DNA, 1 for protein, or the --init-from checkpoint's",
        "stride": "k", "window_size": "bucket-size", "warmup_steps": "max-steps / 10",
        "class_weights": f"{per_task['class_weights']}; none otherwise", "train_regions": "the whole reference",
        "val_regions": "none (no validation)", "alphabet": "dna, or detected from --sequences",
        "per_residue": "from the labels", "stop_after": "max-steps", "val_fraction": "0.1",
        "window": f"{values['window']:,}, clipped to the longest training region",
        "ckpt_minutes": f"{values['ckpt_minutes']:g}", "lr": f"{values['lr']:g}", "dropout": f"{values['dropout']:g}",
        "weight_decay": f"{values['weight_decay']:g}", "ema": "0", "reversible": "reversible",
        "causal": "bidirectional",
        "stem": "stem", "decoder": "decoder", "rc_augment": "no-rc-augment", "soft_mask_input": "soft-mask-input",
        "progress": "progress",
        "init_from": "none", "recipe": "none", "resume": "none", "dry_run": "off"}


DEFAULTS = _defaults()


class _ShownDefault(click.Option):
    """An option whose default is text (the option's own default is None): shown as it is, not "(text)"."""

    def get_help_extra(self, ctx: click.Context) -> dict:
        extra = super().get_help_extra(ctx)  # click >= 8.2; older click shows the text in parentheses
        if "default" in extra and isinstance(self.show_default, str):
            extra["default"] = self.show_default
        return extra


def option(*decls, **kw):
    """click.option with its default shown from DEFAULTS (the name after the last --flag)."""
    name = kw.pop("name", None) or decls[-1].split("/")[0].lstrip("-").replace("-", "_")
    return click.option(*decls, cls=_ShownDefault, show_default=DEFAULTS.get(name, "none"), **kw)


@click.command()
@option("--task", type=click.Choice(TRAIN_TASKS), help="What to train: " +
        ", ".join(f"{name} ({TASKS[name].about})" for name in TRAIN_TASKS) + ".")
@option("--reference", type=_file, help="Reference FASTA (plain or bgzip).")
@option("--bam", type=_file, help="Indexed BAM/CRAM: read evidence fused into the tokens (variant, pattern).")
@option("--truth-vcf", type=_file, help="Indexed truth VCF/BCF giving genotype labels (variant).")
@option("--confident-bed", type=_file, help="Score the variant loss only inside these regions.")
@option("--bed", type=_file, multiple=True, help="BED/GFF/GTF class tracks (pattern); none: soft-masked repeats.")
@option("--train-regions", multiple=True, help=_regions_help)
@option("--val-regions", multiple=True, help=_regions_help + " Must not overlap the training regions.")
@option("--sequences", type=_file, help="classify: labelled sequences, a seq,label CSV/TSV or a FASTA "
        "with '>id label=X' or '>id|X' headers (plain or gzip).")
@option("--val-sequences", type=_file, help="classify: validation sequences (same form); "
        "default: --val-fraction of --sequences.")
@option("--val-fraction", type=float, help="classify: seeded, stratified share held out for validation (0: none).")
@option("--val-tag", help="classify: validate on the FASTA records tagged KEY=VALUE (e.g. VALIDATION=True).")
@option("--exclude-tag", help="classify: leave out the FASTA records tagged KEY=VALUE (e.g. SET=test).")
@option("--label-field", help="classify: CSV column or FASTA header key of the label.")
@option("--residue-labels", type=_file, help="classify: FASTA of one label letter per residue, "
        "ids as in --sequences (FLIP/NetSurfP style).")
@option("--residue-mask", type=_file, help="classify: FASTA of 0/1 per residue; 0 residues are not scored.")
@option("--per-residue/--per-sequence", default=None, help="classify: one label per residue or per sequence.")
@option("--alphabet", type=click.Choice(["dna", "protein"]), help="Sequence alphabet (mlm, classify).")
@option("--window", type=int, help="Window in bases: use e.g. 4,096-65,536 on a CPU; classify: the longest "
        "sequence (longer ones are cut).")
@option("--k", type=int, help="k-mer size, 1-8 (DNA) or 1-3 (protein).")
@option("--stride", type=int, help="Token stride (1..k).")
@option("--d-model", type=int, help="Model width (a recipe's model section may hold the model options).")
@option("--depth", type=int, help="Layers.")
@option("--heads", type=int, help="Attention heads (d-model / heads must be even).")
@option("--bucket-size", type=int, help="LSH bucket size: keys per query = 2 x bucket size.")
@option("--n-hashes", type=int, help="LSH hashing rounds.")
@option("--attention", help="lsh, local, full, or one per layer: lsh,local,lsh.")
@option("--window-size", type=int, help="Local attention block (as bucket-size: the keys per query of LSH).")
@option("--reversible/--no-reversible", default=None, help="Reversible residuals: activation memory flat in depth.")
@option("--ff-mult", type=int, help="Feed-forward width as a multiple of d-model.")
@option("--ff-chunks", type=int, help="Run the feed-forward over at least this many sequence chunks.")
@option("--dropout", type=float, help="Dropout in attention, feed-forward, stem and decoder.")
@option("--causal/--bidirectional", default=None, help="Attend only to earlier tokens, or both ways.")
@option("--stem/--no-stem", default=None, help="Per-base convolutions over bases, soft mask and reads, pooled "
        "onto the tokens.")
@option("--stem-width", type=int, help="Channels of the stem.")
@option("--decoder/--no-decoder", default=None, help="Per-base decoder back to 1 bp (off: each token projected to "
        "k x classes; mlm: masked k-mers as targets).")
@option("--decoder-width", type=int, help="Channels of the decoder.")
@option("--decoder-depth", type=int, help="Convolution blocks of the decoder.")
@option("--evidence-scaling", type=click.Choice(EVIDENCE_SCALINGS), help="Read evidence into the stem: 'weighed' "
        "(a mean over the alt or ref reads times their share of depth) or 'share' (models saved before it).")
@option("--soft-mask-input/--no-soft-mask-input", default=None, help="The stem reads each base's soft-mask bit "
        "(lower case); always off for a pattern model of the soft-masked repeats themselves.")
@option("--composition-k", type=int, help="Classify of DNA sequences: add a linear function of each sequence's "
        "overlapping k-mer frequencies to its logits, a k-mer regression beside the encoder (0: off).")
@option("--rc-augment/--no-rc-augment", default=None, help="Train on the reverse strand of half the windows (DNA).")
@option("--shift-augment", type=int, help="Shift each training item by 0..N bases.")
@option("--class-weights", help="variant: loss weight per class: none, balanced (inverse frequency over "
        "the scored training bases; a hom_ref base where reads show another allele weighs as a variant "
        "base) or seven numbers, hom_ref then snv, insertion, deletion x het, hom_alt "
        "(1,30,30,30,30,30,30). pattern: none or balanced (each class's bases weighted "
        "n_negative / n_positive over the training regions).")
@option("--candidate-weight", type=float, help="variant: loss weight of candidate bases, where at least 10 % "
        "of the reads show another base, a deletion or an insertion (1: as any base). Other than 1, "
        "--class-weights defaults to none.")
@option("--max-steps", type=int, help="Optimizer steps of the run (the learning-rate schedule spans them).")
@option("--stop-after", type=int, help="Stop with a checkpoint at this step (the schedule still spans max-steps).")
@option("--lr", type=float, help="Peak learning rate (linear warm-up, then cosine decay to a tenth).")
@option("--warmup-steps", type=int, help="Linear warm-up steps.")
@option("--weight-decay", type=float, help="AdamW weight decay of matrices and embeddings.")
@option("--ema", type=float, help="Keep an exponential moving average of the weights with this decay per step "
        "(0.99: about the last 100 steps); validation and checkpoints use the average. 0: off.")
@option("--batch-size", type=int, help="Windows (or sequences) per micro-batch; per rank under torchrun.")
@option("--grad-accum", type=int, help="Micro-batches per optimizer step.")
@option("--device", type=click.Choice(DEVICES), help="auto: the GPU when there is one (bf16 autocast), else CPU.")
@option("--seed", type=int, help="Seed of the windows drawn, the weights and every mask: same seed, same run.")
@option("--val-every", type=int, help="Validate every N steps (and at the last); each is one line on stderr.")
@option("--val-windows", type=int, help="Validate on the first N windows tiling --val-regions.")
@option("--ckpt-every", type=int, help="Checkpoint every N steps (and at each validation and the last step).")
@option("--ckpt-minutes", type=float, help="Also checkpoint when this many minutes have passed since the last "
        "checkpoint (0: never). Ctrl-C or SIGTERM always checkpoints the step reached.")
@option("--out", type=click.Path(file_okay=False), help="Run folder: config.json, metrics.csv, summary.json, "
        "training.png, checkpoints/.")
@option("--resume", type=click.Path(), help="Continue the run in this folder exactly.")
@option("--init-from", type=click.Path(), help="Initialise the encoder from this (mlm) run or checkpoint.")
@option("--config", "recipe", type=_file, name="recipe",
        help="YAML/TOML recipe (pipelines/); flags override it; unknown keys rejected.")
@option("--progress/--no-progress", default=None, help="Progress on stderr: a bar on a terminal, a line every "
        "30 s elsewhere.")
@option("--dry-run", is_flag=True, help="Check the config and inputs, print the resolved config as JSON "
        "with the number of parameters and the estimated time per step, train nothing.")
def train(recipe, dry_run, **options):
    """Train a Reformer on windows of a reference (+ reads, truth variants, tracks) or on labelled
    sequences (classify); writes a run folder.

    Ctrl-C (or SIGTERM) checkpoints the step reached and prints the --resume command.
    """
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
