"""The tasks genoformer trains and predicts, each written once (no torch: `genoformer train --help` reads it).

A Task says what it reads (the TrainConfig fields only some tasks use; giving another task's is a
usage error), which head the model grows on the encoder, which validation metric picks the best
checkpoint, how its logits become probabilities (the activation that `predict`, score-variants and
attribute apply: the counterpart of its training loss), the training options whose default differs
for it (`defaults`: the one place to retune them), and the recipe a CPU run should start from.
`predict` writes per base exactly the tasks whose head gives one output per base.

`--task` offers the trainable tasks. A head task such as classify_residues is not chosen on the
command line: `--task classify` grows it when the labels are per residue; it is what the checkpoint
and the model record. Adding a task: its Task here, then its data (train/data.py), loss
(train/losses.py) and metrics (train/metrics.py); the CLI, the model's head, the checkpoint, the
validation and predict follow from this entry.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# head kinds: what the model's output describes
TOKEN_LOGITS = "token logits"  # [B, T, vocab]: one distribution per token (with the per-base decoder: letters per base)
PER_BASE = "per base"  # [B, W, classes]: each base of the window, read from its owning k-mer
PER_SEQUENCE = "per sequence"  # [B, classes]: the mean over the real tokens, projected
PER_RESIDUE = "per residue"  # [B, W, classes]: per base, for labelled sequences rather than windows

SOFT_MASKED = "soft_masked"  # the pattern class of lower-case (soft-masked) bases, where no track is given

# activations: logits -> class probabilities
SOFTMAX = "softmax"  # classes exclude each other (genotypes, sequence and residue labels): cross-entropy
SIGMOID = "sigmoid"  # each class on its own (overlapping tracks): binary cross-entropy

_WINDOWS = ("reference", "train_regions", "val_regions")
_SEQUENCES = ("sequences", "val_sequences", "val_tag", "exclude_tag", "residue_labels", "residue_mask", "per_residue")


@dataclass(frozen=True)
class Task:
    name: str  # as --task, in checkpoints and in prediction files
    about: str  # one line for --help
    head: str  # a head kind above
    inputs: tuple[str, ...]  # the task-specific TrainConfig fields it reads
    metric: str  # the main validation metric: it picks the best checkpoint
    higher_is_better: bool = True
    activation: str | None = None  # SOFTMAX or SIGMOID; None: mlm (log-probabilities of tokens or letters)
    trained_by: str | None = None  # a head task: the --task that grows it when the labels call for it
    defaults: Mapping[str, object] = field(default_factory=dict)  # TrainConfig options unset by the user
    cpu_recipe: str | None = None  # pipelines/ recipe sized for a CPU, named when a run would take hours

    @property
    def per_base(self) -> bool:
        """Whether its head gives one output per base (a per-base or per-residue head): what `predict` writes
        along a reference."""
        return self.head in (PER_BASE, PER_RESIDUE)


# variant: one token per base (the base and its reads' evidence meet in one position) and class weights
# (non-ref bases are ~1/1000: unweighted, every setting learns "all hom_ref" and calls nothing);
# docs/benchmarks.md, "Variant calls": k 1 + balanced finds 45/45 SNVs where k 6 or no weights find 0-19
_VARIANT_DEFAULTS = {"k": 1, "class_weights": "balanced"}


TASKS: dict[str, Task] = {task.name: task for task in (
    Task("mlm", "masked k-mer modelling, pre-training without labels", TOKEN_LOGITS, _WINDOWS, "accuracy"),
    Task("variant", "per-base variant classes (type x genotype) from reads and a truth VCF", PER_BASE,
         _WINDOWS + ("bam", "truth_vcf", "confident_bed", "class_weights", "candidate_weight"),
         "f1", activation=SOFTMAX,
         defaults=_VARIANT_DEFAULTS, cpu_recipe="pipelines/variant-cpu.yaml"),
    # pattern picks on AUROC: AUPRC follows prevalence (a class on 98 % of bases scores ~0.98 AUPRC at chance)
    Task("pattern", "per-base classes from BED/GFF tracks or soft-masked repeats", PER_BASE,
         _WINDOWS + ("bam", "bed", "class_weights"), "auroc", activation=SIGMOID, cpu_recipe="pipelines/pattern-cpu.yaml"),
    Task("classify", "one label per labelled sequence, or per residue", PER_SEQUENCE, _SEQUENCES, "accuracy",
         activation=SOFTMAX),
    Task("classify_residues", "one label per residue of labelled sequences", PER_RESIDUE, _SEQUENCES, "accuracy",
         activation=SOFTMAX, trained_by="classify"),
)}

TRAIN_TASKS = tuple(name for name, task in TASKS.items() if task.trained_by is None)  # the --task choices
PREDICTED = tuple(name for name, task in TASKS.items() if task.per_base)  # written per base by predict
TASK_INPUTS = tuple(dict.fromkeys(name for task in TASKS.values() for name in task.inputs))


def task_default(task: str, name: str, otherwise=None):
    """The default of training option `name` for `task` (Task.defaults), or `otherwise`."""
    return TASKS[task].defaults.get(name, otherwise)


def head_task(task: str, per_residue: bool = False) -> str:
    """The head task that `--task task` trains: its per-residue head task when the labels are per residue."""
    if per_residue:
        return next(t.name for t in TASKS.values() if t.trained_by == task and t.head == PER_RESIDUE)
    return task


def refused_inputs(task: str) -> tuple[str, ...]:
    """The task-specific inputs of other tasks that `task` does not read."""
    return tuple(name for name in TASK_INPUTS if name not in TASKS[task].inputs)
