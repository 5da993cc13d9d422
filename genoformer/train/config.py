"""TrainConfig: what a run trains on and how, with the architecture of a new model as its `model` section.

A recipe or a saved config may give the model options flat (`d_model: 256`, `stem: false`, as the
shipped recipes and runs saved before the section existed do) or nested (`model: {d_model: 256}`);
both read the same. config.json and checkpoints record the nested form, with every model option
resolved.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from genoformer.devices import check_device
from genoformer.errors import UsageError, refuse_unknown
from genoformer.io.variant_classes import VARIANT_CLASSES
from genoformer.model.config import ReformerConfig
from genoformer.model.per_base import PerBaseConfig
from genoformer.tasks import TASK_INPUTS, TASKS, TRAIN_TASKS, task_default

# ReformerConfig fields a run does not choose: the tokenizer fixes vocab_size and pad_token_id, and
# training draws fresh LSH rotations every step (predict and buckets fix hash_seed for inference)
NOT_CHOSEN = ("vocab_size", "pad_token_id", "hash_seed")
_DEFAULT = {f.name: f.default for f in dataclasses.fields(ReformerConfig)}
_PER_BASE = {f.name: f.default for f in dataclasses.fields(PerBaseConfig)}

# what a resumed run may change (max_steps re-spans the schedule); the rest comes from the checkpoint
RESUME_OVERRIDES = ("max_steps", "stop_after", "device", "progress", "val_every", "ckpt_every", "ckpt_minutes")
# the largest learning rate AdamW can apply in float32: its first step is lr / (1 - beta1) = 10 lr, and
# float32 ends at 3.4e38 (above it the update overflows inside the optimizer, before any loss is seen)
MAX_LR = 3.4e37


@dataclass
class ModelConfig:
    """The architecture of a new model: ReformerConfig's fields less NOT_CHOSEN (the encoder), then
    PerBaseConfig's (the per-base stem and decoder, model/per_base.py), with their defaults.

    `dropout` is one option for the whole model: the encoder's, the stem's and the decoder's.
    window_size None takes bucket_size, so local attention sees as many keys per query as LSH (its
    own block and the one before). On resume the architecture is the checkpoint's and this section
    is replaced by it. With init_from the encoder's architecture is the checkpoint's, while the stem
    and decoder (new parts, their fitting tensors copied over) and dropout (which holds no weights)
    are this section's.
    """
    d_model: int = _DEFAULT["d_model"]
    depth: int = _DEFAULT["depth"]
    heads: int = _DEFAULT["heads"]
    bucket_size: int = _DEFAULT["bucket_size"]
    n_hashes: int = _DEFAULT["n_hashes"]
    attention: str | list[str] = _DEFAULT["attention"]
    reversible: bool = _DEFAULT["reversible"]
    ff_mult: int = _DEFAULT["ff_mult"]
    ff_chunks: int = _DEFAULT["ff_chunks"]
    dropout: float = _DEFAULT["dropout"]
    causal: bool = _DEFAULT["causal"]
    window_size: int | None = None  # None: bucket_size
    # the per-base stem and decoder (PerBaseConfig; dropout above is theirs too)
    stem: bool = _PER_BASE["stem"]
    stem_width: int = _PER_BASE["stem_width"]
    decoder: bool = _PER_BASE["decoder"]
    decoder_width: int = _PER_BASE["decoder_width"]
    decoder_depth: int = _PER_BASE["decoder_depth"]
    evidence_scaling: str = _PER_BASE["evidence_scaling"]
    soft_mask_input: bool = _PER_BASE["soft_mask_input"]
    composition_k: int = _PER_BASE["composition_k"]

    def __post_init__(self) -> None:
        # ReformerConfig's and PerBaseConfig's checks, before any input is read
        self.reformer_config(vocab_size=1)
        self.per_base_config()

    def reformer_config(self, vocab_size: int) -> ReformerConfig:
        window_size = self.bucket_size if self.window_size is None else self.window_size
        encoder = {name: getattr(self, name) for name in ENCODER_OPTIONS}
        return ReformerConfig(vocab_size=vocab_size, **(encoder | {"window_size": window_size}))

    def per_base_config(self) -> PerBaseConfig:
        return PerBaseConfig(**{name: getattr(self, name) for name in PER_BASE_OPTIONS})

    @classmethod
    def of(cls, config: ReformerConfig, per_base: PerBaseConfig) -> ModelConfig:
        """The section that builds `config`'s encoder with `per_base`'s stem and decoder (a checkpoint's)."""
        return cls(**{name: getattr(per_base, name) for name in PER_BASE_OPTIONS}
                   | {name: getattr(config, name) for name in ENCODER_OPTIONS})

    @classmethod
    def from_dict(cls, values: Mapping) -> ModelConfig:
        _check_mapping(values)
        unknown = sorted(set(values) - set(MODEL_OPTIONS))
        if unknown:
            raise UsageError(f"unknown model option {unknown[0]!r}", hint=f"known: {', '.join(MODEL_OPTIONS)}")
        return cls(**values)


MODEL_OPTIONS = tuple(f.name for f in dataclasses.fields(ModelConfig))
ENCODER_OPTIONS = tuple(name for name in MODEL_OPTIONS if name in _DEFAULT)  # ReformerConfig's
PER_BASE_OPTIONS = tuple(name for name in MODEL_OPTIONS if name in _PER_BASE)  # PerBaseConfig's (dropout: both)


def _check_mapping(values) -> None:
    if not isinstance(values, Mapping):
        raise UsageError(f"model must be a mapping of model options to values, got {values!r}",
                         hint=f"e.g. model: {{d_model: 256, depth: 6}}; known: {', '.join(MODEL_OPTIONS)}")


@dataclass
class TrainConfig:
    task: str = "mlm"
    reference: str | None = None
    bam: str | None = None
    truth_vcf: str | None = None
    confident_bed: str | None = None
    bed: list[str] = field(default_factory=list)  # pattern: BED/GFF class tracks (none: soft-masked repeats)
    train_regions: list[str] | None = None  # region strings or BED files; None: whole reference
    val_regions: list[str] | None = None
    # classify: labelled sequences (CSV or FASTA, see sequences.py), validation from a file, a tag or a fraction
    sequences: str | None = None
    val_sequences: str | None = None
    val_fraction: float = 0.1  # classify: seeded, stratified share of --sequences held out (0: none)
    val_tag: str | None = None  # classify: KEY=VALUE header tag of the validation records (VALIDATION=True)
    exclude_tag: str | None = None  # classify: KEY=VALUE header tag of records to leave out (SET=test)
    label_field: str = "label"  # classify: CSV column or FASTA header key of the label
    residue_labels: str | None = None  # classify: FASTA of per-residue labels, ids as in --sequences
    residue_mask: str | None = None  # classify: FASTA of 0/1 per residue; 0 = not scored
    per_residue: bool | None = None  # classify: None = from the labels
    alphabet: str | None = None  # dna | protein; None: dna for windows, detected for sequences
    window: int = 1_000_000  # classify: the longest sequence (longer ones are cut to it)
    k: int | None = None  # None: the task's default (tasks.py), else 6 for DNA, 1 for protein; or --init-from's
    stride: int | None = None
    model: ModelConfig = field(default_factory=ModelConfig)  # a mapping is read as ModelConfig.from_dict
    max_steps: int = 1000
    stop_after: int | None = None  # stop (with a checkpoint) at this step; the schedule still spans max_steps
    lr: float = 3e-4
    warmup_steps: int | None = None  # None: a tenth of max_steps
    weight_decay: float = 0.01
    ema: float = 0.0  # decay of a moving average of the weights (0: off); checkpoints and validation use it
    batch_size: int = 1
    grad_accum: int = 1
    grad_clip: float = 1.0
    mask_fraction: float = 0.15
    mask_span: int = 3
    # training items only (data/augment.py): reverse-complement half of them (DNA), shift each by 0..N bases
    rc_augment: bool = False
    shift_augment: int = 0
    device: str = "auto"
    seed: int = 0
    val_every: int = 200
    val_windows: int = 8  # validate on the first N windows tiling the validation regions (classify: all)
    # variant: weight of each class in the loss. "none"; "balanced" (n / (7 n_class), counted over the
    # scored training bases: non-ref bases are ~1/1000; a hom_ref candidate base, train/losses.py, weighs
    # the non-ref classes' mean); or seven numbers, one per VARIANT_CLASSES class.
    # pattern: "none" or "balanced" (each class's positive bases weighted n_negative / n_positive).
    # None: the task's default (tasks.py), "none" for tasks without weights
    class_weights: str | list[float] | None = None
    # variant: loss weight of candidate bases, where reads show another allele (train/losses.py); 1: as any base
    candidate_weight: float = 1.0
    ckpt_every: int = 500
    ckpt_minutes: float = 10.0  # also checkpoint when this long has passed since the last one (0: never)
    out: str = "run"
    init_from: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.task not in TRAIN_TASKS:
            raise UsageError(f"unknown task {self.task!r}; use one of {', '.join(TRAIN_TASKS)}")
        if not isinstance(self.model, ModelConfig):
            self.model = ModelConfig.from_dict(self.model)
        if isinstance(self.val_fraction, bool) or not isinstance(self.val_fraction, (int, float)) \
                or not 0 <= self.val_fraction < 1:
            raise UsageError(f"val-fraction must be a number in [0, 1), got {self.val_fraction!r}")
        if self.alphabet not in (None, "dna", "protein"):
            raise UsageError(f"alphabet must be dna or protein, got {self.alphabet!r}")
        if self.per_residue not in (None, True, False):
            raise UsageError(f"per-residue must be true or false, got {self.per_residue!r}")
        if self.k is not None and (isinstance(self.k, bool) or not isinstance(self.k, int)):
            raise UsageError(f"k must be an integer, got {self.k!r}")
        for name in ("max_steps", "batch_size", "grad_accum", "val_every", "ckpt_every", "val_windows", "mask_span"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name.replace('_', '-')} must be a positive integer, got {value!r}")
        if self.stop_after is not None and not 0 < self.stop_after <= self.max_steps:
            raise UsageError(f"stop-after must be in 1..max-steps ({self.max_steps}), got {self.stop_after}")
        if self.warmup_steps is not None and (isinstance(self.warmup_steps, bool) or
                                              not isinstance(self.warmup_steps, int) or self.warmup_steps < 0):
            raise UsageError(f"warmup-steps must be a non-negative integer, got {self.warmup_steps!r}")
        for name in ("lr", "weight_decay", "grad_clip", "mask_fraction", "candidate_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"{name.replace('_', '-')} must be a number, got {value!r}")
        if not (self.lr > 0 and 0 < self.mask_fraction < 1 and self.grad_clip > 0 and self.candidate_weight > 0):
            raise UsageError("lr, grad-clip and candidate-weight must be > 0, mask-fraction in (0, 1)")
        if isinstance(self.ema, bool) or not isinstance(self.ema, (int, float)) or not 0 <= self.ema < 1:
            raise UsageError(f"ema must be a number in [0, 1) (0: off; e.g. 0.99 averages about the last 100 "
                             f"steps), got {self.ema!r}")
        if self.lr > MAX_LR:
            raise UsageError(f"lr must be at most {MAX_LR:g}: AdamW's update overflows float32 above it "
                             f"(useful rates are below 1), got {self.lr:g}")
        if isinstance(self.ckpt_minutes, bool) or not isinstance(self.ckpt_minutes, (int, float)) \
                or not self.ckpt_minutes >= 0:
            raise UsageError(f"ckpt-minutes must be a number >= 0 (0: no timed checkpoints), got {self.ckpt_minutes!r}")
        check_device(self.device)
        if not isinstance(self.rc_augment, bool):
            raise UsageError(f"rc-augment must be true or false, got {self.rc_augment!r}")
        if isinstance(self.shift_augment, bool) or not isinstance(self.shift_augment, int) or self.shift_augment < 0:
            raise UsageError(f"shift-augment must be a non-negative number of bases, got {self.shift_augment!r}")
        if self.class_weights is None:
            # the candidate weight replaces the task's default class weights: with both, a non-reference base
            # outweighs a reference one ~10^5 times and the model calls every base (docs/benchmarks.md)
            self.class_weights = "none" if self.candidate_weight != 1 else \
                task_default(self.task, "class_weights", "none")
        if self.task == "pattern" and not (isinstance(self.class_weights, str) and
                                           self.class_weights.strip().lower() in ("none", "balanced")):
            raise UsageError(f"class-weights for the pattern task must be none or balanced, got {self.class_weights!r}")
        self.class_weights = parse_class_weights(self.class_weights)
        for name, unset in (("class_weights", "none"), ("candidate_weight", 1)):
            if getattr(self, name) != unset and name not in TASKS[self.task].inputs:
                weighted = [task_name for task_name, task in TASKS.items() if name in task.inputs]
                raise UsageError(f"{name.replace('_', '-')} applies to the {' and '.join(weighted)} "
                                 f"task{'s' if len(weighted) > 1 else ''} only, not {self.task}")

    @classmethod
    def from_dict(cls, values: Mapping) -> TrainConfig:
        """A config from option names (underscores) to values; model options flat or under `model`."""
        values = nest_model_options(values)
        known = {f.name for f in dataclasses.fields(cls)}
        refuse_unknown(values, known, "training option", known | set(MODEL_OPTIONS))
        return cls(**values)

    def given_inputs(self) -> list[str]:
        """The task-specific inputs (tasks.TASK_INPUTS) set away from their defaults."""
        return [name for name in TASK_INPUTS if getattr(self, name) != _DEFAULT_INPUTS[name]]


_DEFAULT_INPUTS = {f.name: f.default_factory() if f.default is dataclasses.MISSING else f.default
                   for f in dataclasses.fields(TrainConfig) if f.name in TASK_INPUTS} | {"class_weights": "none"}


def nest_model_options(values: Mapping) -> dict:
    """`values` with its flat model options moved under "model" (a model option given both ways is refused)."""
    values = dict(values)
    nested = values.pop("model", None)
    if nested is None:  # also a bare `model:` line in YAML
        nested = {}
    elif isinstance(nested, ModelConfig):
        nested = dataclasses.asdict(nested)
    _check_mapping(nested)
    flat = {name: values.pop(name) for name in MODEL_OPTIONS if name in values}
    twice = sorted(set(flat) & set(nested))
    if twice:
        raise UsageError(f"model option {twice[0]!r} is given twice, at the top level and under model")
    return values | {"model": {**nested, **flat}}


def parse_class_weights(value) -> str | list[float]:
    """"none", "balanced" or one weight per VARIANT_CLASSES class from a flag string or a recipe value."""
    if isinstance(value, str) and value.strip().lower() in ("none", "balanced"):
        return value.strip().lower()
    parts = value.split(",") if isinstance(value, str) else value
    try:
        weights = [float(w) for w in parts]
    except (TypeError, ValueError):
        weights = []
    if len(weights) != len(VARIANT_CLASSES) or not all(math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
        raise UsageError(f"class-weights must be none, balanced or {len(VARIANT_CLASSES)} non-negative numbers "
                         f"({','.join(VARIANT_CLASSES)}), got {value!r}", hint="e.g. --class-weights 1,50,50,50,50,50,50")
    return weights
