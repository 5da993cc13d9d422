"""Training: TrainConfig and train(config) -> summary, for the mlm, variant, pattern and classify tasks.

mlm, variant and pattern read windows of a reference; classify reads labelled sequences (sequences.py).
dry_run(config) checks a config and its inputs and reports what training would use, training nothing.

Exact resume: windows come from a seeded RandomWindowSampler positioned by the step count, and
every step reseeds torch from (seed, step) before it draws masks or LSH rotations, so a run
resumed from a checkpoint (weights, optimizer, scheduler, step) repeats an uninterrupted run's
losses on CPU. The run folder holds checkpoints/, metrics.csv (step, split, metric, value),
summary.json and config.json. Under `torchrun --nproc_per_node N` the same call trains with
DistributedDataParallel (distributed.py); batch_size is per rank.
"""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from genoformer.train import distributed
from genoformer.coords import Interval, parse_region, read_bed
from genoformer.data.datasets import SequenceDataset, WindowDataset
from genoformer.data.samplers import RandomWindowSampler, SequenceSampler
from genoformer.errors import CheckpointError, NumericalError, OutputError, UsageError
from genoformer.interrupt import raise_if_terminated
from genoformer.model import checkpoint as ckpt
from genoformer.io.variants import GENOTYPES
from genoformer.model.config import ReformerConfig
from genoformer.outputs import write_bytes as atomic_write
from genoformer.model.heads import GenoModel
from genoformer.data.sequences import load_sequence_data, make_tokenizer
from genoformer.train.tasks import MAIN_METRIC, forward_loss, metrics
from genoformer.tokenize import KmerTokenizer, ProteinTokenizer
from genoformer.data.windows import check_window_size, tile

TASKS = ("mlm", "variant", "pattern", "classify")
# inputs of each task; giving another task's input is a usage error
_WINDOW_INPUTS = ("reference", "bam", "truth_vcf", "confident_bed", "bed", "train_regions", "val_regions")
_SEQUENCE_INPUTS = ("sequences", "val_sequences", "val_tag", "exclude_tag", "residue_labels", "residue_mask",
                    "per_residue")
_UNUSED = {"mlm": ("bam", "truth_vcf", "confident_bed", "bed") + _SEQUENCE_INPUTS,
           "variant": ("bed",) + _SEQUENCE_INPUTS,
           "pattern": ("truth_vcf", "confident_bed") + _SEQUENCE_INPUTS,
           "classify": _WINDOW_INPUTS}
# what a resumed run may change (max_steps re-spans the schedule); the rest comes from the checkpoint
RESUME_OVERRIDES = ("max_steps", "stop_after", "device", "progress", "val_every", "ckpt_every")


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
    k: int | None = None  # None: 6 for DNA, 1 for protein, or the --init-from checkpoint's
    stride: int | None = None
    d_model: int = 256
    depth: int = 6
    heads: int = 4
    bucket_size: int = 64
    n_hashes: int = 4
    attention: str | list[str] = "lsh"
    max_steps: int = 1000
    stop_after: int | None = None  # stop (with a checkpoint) at this step; the schedule still spans max_steps
    lr: float = 3e-4
    warmup_steps: int | None = None  # None: a tenth of max_steps
    weight_decay: float = 0.01
    batch_size: int = 1
    grad_accum: int = 1
    grad_clip: float = 1.0
    mask_fraction: float = 0.15
    mask_span: int = 3
    device: str = "auto"
    seed: int = 0
    val_every: int = 200
    val_windows: int = 8  # validate on the first N windows tiling the validation regions (classify: all)
    # variant: weight of each genotype in the loss. "none"; "balanced" (n / (3 n_class), counted over the
    # scored training bases: non-ref bases are ~1/1000); or three numbers hom_ref,het,hom_alt
    class_weights: str | list[float] = "none"
    ckpt_every: int = 500
    out: str = "run"
    init_from: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise UsageError(f"unknown task {self.task!r}; use one of {', '.join(TASKS)}")
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
        for name in ("lr", "weight_decay", "grad_clip", "mask_fraction"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"{name.replace('_', '-')} must be a number, got {value!r}")
        if not (self.lr > 0 and 0 < self.mask_fraction < 1 and self.grad_clip > 0):
            raise UsageError("lr and grad-clip must be > 0, mask-fraction in (0, 1)")
        if self.device not in ("auto", "cpu", "cuda"):
            raise UsageError(f"device must be auto, cpu or cuda, got {self.device!r}")
        self.class_weights = parse_class_weights(self.class_weights)
        if self.class_weights != "none" and self.task != "variant":
            raise UsageError(f"class-weights apply to the variant task, not {self.task}")

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise UsageError(f"unknown training option {unknown[0]!r}", hint=f"known: {', '.join(sorted(known))}")
        return cls(**values)


def parse_class_weights(value) -> str | list[float]:
    """"none", "balanced" or [w_hom_ref, w_het, w_hom_alt] from a flag string or a recipe value."""
    if isinstance(value, str) and value.strip().lower() in ("none", "balanced"):
        return value.strip().lower()
    parts = value.split(",") if isinstance(value, str) else value
    try:
        weights = [float(w) for w in parts]
    except (TypeError, ValueError):
        weights = []
    if len(weights) != len(GENOTYPES) or not all(math.isfinite(w) and w >= 0 for w in weights) or not any(weights):
        raise UsageError(f"class-weights must be none, balanced or {len(GENOTYPES)} non-negative numbers "
                         f"({','.join(GENOTYPES)}), got {value!r}", hint="e.g. --class-weights 1,50,50")
    return weights


def genotype_counts(variants, intervals: list[Interval], confident: list[Interval] | None,
                    chunk: int = 1 << 20) -> list[int]:
    """Scored bases of each genotype (hom_ref, het, hom_alt) inside `intervals`, as the loss sees them."""
    by_contig: dict[str, list[Interval]] = {}
    for iv in sorted(confident or [], key=lambda iv: (iv.contig, iv.start)):
        by_contig.setdefault(iv.contig, []).append(iv)
    counts = np.zeros(len(GENOTYPES), dtype=np.int64)
    for iv in intervals:
        for start in range(iv.start, iv.end, chunk):
            end = min(start + chunk, iv.end)
            near = None if confident is None else \
                [c for c in by_contig.get(iv.contig, []) if c.start < end and start < c.end]
            labels = variants.labels(iv.contig, start, end, near)
            counts += np.bincount(labels.genotype[labels.mask], minlength=len(GENOTYPES))[:len(GENOTYPES)]
    return [int(c) for c in counts]


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("device cuda requested but no CUDA GPU is available", hint="use --device cpu or auto")
    return torch.device("cuda" if name == "auto" and torch.cuda.is_available() else "cpu" if name == "auto" else name)


def _regions(specs: list[str] | None, contigs: dict[str, int], what: str) -> list[Interval] | None:
    if specs is None:
        return None
    out: list[Interval] = []
    for spec in specs:
        out += read_bed(spec, contigs) if Path(spec).is_file() else [parse_region(spec, contigs)]
    if not out:
        raise UsageError(f"{what} regions are empty ({', '.join(specs)} holds no intervals)")
    return out


def _overlap(a: list[Interval], b: list[Interval]) -> Interval | None:
    for x in a:
        for y in b:
            if x.contig == y.contig and x.start < y.end and y.start < x.end:
                return Interval(x.contig, max(x.start, y.start), min(x.end, y.end))
    return None


@dataclass
class TrainData:
    """What a run trains on: the config with data-dependent defaults resolved, tokenizer, datasets."""

    config: TrainConfig  # alphabet, k (and for classify per_residue) filled in
    tokenizer: KmerTokenizer | ProteinTokenizer
    train: WindowDataset | SequenceDataset
    sampler: RandomWindowSampler | SequenceSampler  # yields items of `train`, feeding all ranks
    val: WindowDataset | SequenceDataset | None
    class_names: list[str]
    n_evidence: int
    summary: dict  # what --dry-run reports about the data
    class_weights: list[float] | None = None  # variant: the loss weight of each genotype, resolved

    @property
    def model_task(self) -> str:
        return "classify_residues" if self.config.per_residue else self.config.task

    @property
    def head(self) -> dict:
        head = {"n_classes": 0 if self.config.task == "mlm" else len(self.class_names),
                "n_evidence": self.n_evidence, "class_names": self.class_names}
        if self.config.task == "classify":
            head |= {"per_residue": bool(self.config.per_residue), "alphabet": self.config.alphabet}
        return head


def _tokenizer(config: TrainConfig, alphabet: str, fixed: KmerTokenizer | ProteinTokenizer | None):
    """A new tokenizer for `alphabet`, or the checkpoint's (`fixed`) after checking it fits."""
    if fixed is None:
        return make_tokenizer(alphabet, config.k, config.stride)
    if fixed.kind != alphabet:
        raise UsageError(f"the checkpoint's tokenizer reads {fixed.kind} but the {config.task} inputs are {alphabet}")
    if config.k not in (None, fixed.k) or config.stride not in (None, fixed.stride):
        raise UsageError(f"k {config.k} / stride {config.stride} differ from the checkpoint's tokenizer "
                         f"(k {fixed.k}, stride {fixed.stride})", hint="leave out --k and --stride")
    return fixed


def prepare(config: TrainConfig, tokenizer: KmerTokenizer | ProteinTokenizer | None = None,
            ranks: int = 1) -> TrainData:
    """Open and check every input of `config`; `tokenizer` (from --init-from or a resumed run) is kept."""
    given = [name for name in _UNUSED[config.task] if getattr(config, name)]
    if given:
        raise UsageError(f"task {config.task} does not use --{given[0].replace('_', '-')}")
    check_window_size(config.window)
    n_samples = config.max_steps * config.batch_size * config.grad_accum * ranks
    if config.task == "classify":
        return _sequence_data(config, tokenizer, n_samples)
    return _window_data(config, tokenizer, n_samples)


def _sequence_data(config: TrainConfig, fixed, n_samples: int) -> TrainData:
    if config.sequences is None:
        raise UsageError("task classify needs --sequences (labelled FASTA or seq,label CSV)")
    data = load_sequence_data(config.sequences, val_sequences=config.val_sequences, val_fraction=config.val_fraction,
                              val_tag=config.val_tag, exclude_tag=config.exclude_tag, label_field=config.label_field,
                              residue_labels=config.residue_labels, residue_mask=config.residue_mask,
                              per_residue=config.per_residue, alphabet=config.alphabet, seed=config.seed)
    tokenizer = _tokenizer(config, data.alphabet, fixed)
    if config.window < tokenizer.k:
        raise UsageError(f"window {config.window:,} is smaller than k = {tokenizer.k}: not one k-mer fits")
    config = dataclasses.replace(config, alphabet=data.alphabet, per_residue=data.per_residue, k=tokenizer.k)
    train_ds = SequenceDataset(data.train, tokenizer, data.class_names, config.window)
    val_ds = SequenceDataset(data.val, tokenizer, data.class_names, config.window) if data.val else None
    summary = {"train_sequences": len(train_ds), "val_sequences": len(val_ds) if val_ds else 0,
               "longest": max(train_ds.lengths), "alphabet": data.alphabet, "per_residue": data.per_residue}
    return TrainData(config, tokenizer, train_ds, SequenceSampler(len(train_ds), n_samples, seed=config.seed),
                     val_ds, data.class_names, 0, summary)


def _window_data(config: TrainConfig, fixed, n_samples: int) -> TrainData:
    from genoformer.io.alignments import EVIDENCE_FEATURES, Alignments
    from genoformer.io.fasta import Reference
    from genoformer.io.tracks import Tracks
    from genoformer.io.variants import GENOTYPES, TruthVariants

    if config.reference is None:
        raise UsageError("give a reference FASTA (--reference)")
    if config.task == "variant" and (config.bam is None or config.truth_vcf is None):
        raise UsageError("task variant needs --bam (read evidence) and --truth-vcf (labels)")
    if config.task != "mlm" and config.alphabet not in (None, "dna"):
        raise UsageError(f"task {config.task} reads DNA; --alphabet {config.alphabet} is for mlm and classify")
    tokenizer = _tokenizer(config, config.alphabet or "dna", fixed)
    config = dataclasses.replace(config, alphabet=tokenizer.kind, k=tokenizer.k)
    if config.window < tokenizer.k:
        raise UsageError(f"window {config.window:,} is smaller than k = {tokenizer.k}: not one k-mer fits")
    ref = Reference(config.reference, alphabet=tokenizer.kind)
    train_iv = _regions(config.train_regions, ref.contigs, "training")
    val_iv = _regions(config.val_regions, ref.contigs, "validation")
    if val_iv is not None:
        clash = _overlap(val_iv, train_iv or [Interval(c, 0, n) for c, n in ref.contigs.items()])
        if clash is not None:
            raise UsageError(f"validation regions overlap the training regions at {clash.to_region()}",
                             hint="give --train-regions and --val-regions that do not share bases")
    sources: dict = {}
    if config.task == "variant":
        sources["variants"] = TruthVariants(config.truth_vcf, ref)
        sources["confident"] = read_bed(config.confident_bed, ref.contigs) if config.confident_bed else None
    if config.bam is not None:
        sources["alignments"] = Alignments(config.bam, ref)
    class_names: list[str] = list(GENOTYPES) if config.task == "variant" else []
    if config.task == "pattern":
        if config.bed:
            sources["tracks"] = Tracks.from_files(config.bed, ref.contigs)
            class_names = sources["tracks"].class_names
        else:
            class_names = ["soft_masked"]
    sampler = RandomWindowSampler(train_iv, config.window, n_samples, seed=config.seed, contig_lengths=ref.contigs)
    train_ds = WindowDataset(ref, [], tokenizer, **sources)
    val_ds = None
    if val_iv is not None:
        windows = tile(val_iv, config.window, contig_lengths=ref.contigs)[:config.val_windows]
        val_ds = WindowDataset(ref, windows, tokenizer, **sources)
    n_evidence = len(EVIDENCE_FEATURES) if config.bam is not None else 0
    train_bases = sum(len(iv) for iv in train_iv) if train_iv else sum(ref.contigs.values())
    summary = {"train_bases": train_bases, "val_windows": len(val_ds) if val_ds else 0}
    weights = None
    if config.class_weights == "balanced":
        counts = genotype_counts(sources["variants"], train_iv or [Interval(c, 0, n) for c, n in ref.contigs.items()],
                                 sources["confident"])
        if not sum(counts):
            raise UsageError("class-weights balanced: no scored bases in the training regions",
                             hint="check --train-regions against --confident-bed")
        # a genotype absent from the training regions is weighted as the rarest present one
        weights = [sum(counts) / (len(counts) * (c or min(n for n in counts if n))) for c in counts]
        summary["genotype_counts"] = dict(zip(class_names, counts))
    elif config.class_weights != "none":
        weights = list(config.class_weights)
    if weights is not None:
        summary["class_weights"] = dict(zip(class_names, weights))
    return TrainData(config, tokenizer, train_ds, sampler, val_ds, class_names, n_evidence, summary, weights)


def _collate(items: list[dict]) -> dict:
    return {key: torch.stack([it[key] for it in items]) for key, v in items[0].items() if isinstance(v, torch.Tensor)}


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step * 7919) % (2 ** 63)


def _schedule(config: TrainConfig):
    warmup = config.max_steps // 10 if config.warmup_steps is None else config.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(config.max_steps - warmup, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))  # cosine down to lr / 10
    return factor


def _build_model(data: TrainData, pretrained: GenoModel | None) -> GenoModel:
    config, head = data.config, data.head
    if pretrained is not None:  # the architecture always comes from the pre-trained checkpoint
        model = GenoModel(pretrained.encoder.config, data.tokenizer, data.model_task, head["n_classes"],
                          head["n_evidence"])
        model.encoder.load_state_dict(pretrained.encoder.state_dict())
        return model
    model_config = ReformerConfig(vocab_size=data.tokenizer.vocab_size, d_model=config.d_model, depth=config.depth,
                                  heads=config.heads, bucket_size=config.bucket_size, n_hashes=config.n_hashes,
                                  attention=config.attention, window_size=config.bucket_size)
    return GenoModel(model_config, data.tokenizer, data.model_task, head["n_classes"], head["n_evidence"])


def _validate(model, config, val_ds, device, weights: torch.Tensor | None) -> dict[str, float]:
    model.eval()
    gen = torch.Generator().manual_seed(config.seed)  # the same masks at every validation
    outputs, losses = [], []
    collate = getattr(val_ds, "collate", _collate)  # sequences pad to the batch's longest; windows stack
    with torch.no_grad(), _autocast(device):
        for i in range(0, len(val_ds), config.batch_size):
            batch = collate([val_ds[j] for j in range(i, min(i + config.batch_size, len(val_ds)))])
            loss, out = forward_loss(model, config.task, batch, device, generator=gen,
                                     mask_fraction=config.mask_fraction, mask_span=config.mask_span,
                                     class_weights=weights)
            losses.append(float(loss))
            outputs.append(out)
    model.train()
    return {"loss": sum(losses) / len(losses)} | metrics(config.task, outputs)


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


def resume(run_dir: str | os.PathLike, **overrides) -> dict:
    """Continue a run from its latest checkpoint exactly; only RESUME_OVERRIDES may be changed."""
    bad = sorted(set(overrides) - set(RESUME_OVERRIDES))
    if bad:
        raise UsageError(f"{bad[0]} cannot change a resumed run; only {', '.join(RESUME_OVERRIDES)} may")
    folder = ckpt.resolve(run_dir)
    saved = ckpt.load_checkpoint(folder)[1].get("train_config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"{folder / ckpt.META}: holds no training config to resume")
    try:  # the run folder may have moved; a stop-after of the interrupted run does not carry over
        config = TrainConfig.from_dict(saved | {"stop_after": None, "out": str(folder.parent.parent)} | overrides)
    except (UsageError, TypeError) as e:
        raise CheckpointError(f"{folder / ckpt.META}: bad training config ({e})") from None
    return _run(config, folder)


def _write_metrics(path: Path, rows: list[tuple], keep_until: int | None = None) -> None:
    if keep_until is not None:  # a resumed run drops what the interrupted one logged after its checkpoint
        old = list(csv.reader(path.open())) if path.is_file() else [["step", "split", "metric", "value"]]
        # a row cut short by a kill has fewer fields, or a step past the checkpoint
        kept = [r for r in old[1:] if len(r) == 4 and r[0].isdigit() and int(r[0]) <= keep_until]
        text = "\n".join(",".join(r) for r in [old[0], *kept]) + "\n"
        atomic_write(path, text.encode())
        return
    new = not path.is_file()
    with path.open("a", newline="") as fh:
        writer = csv.writer(fh)
        if new:
            writer.writerow(["step", "split", "metric", "value"])
        writer.writerows(rows)


def train(config: TrainConfig) -> dict:
    """Train and return the summary (also written to OUT/summary.json); `losses` maps step -> training loss."""
    return _run(config, None)


def dry_run(config: TrainConfig) -> dict:
    """Check `config` and its inputs as train() would and build the model, training nothing.

    Returns the resolved config, the number of parameters, the classes and a summary of the data.
    """
    _check_fresh(config.out)
    pretrained = ckpt.load_checkpoint(config.init_from)[0] if config.init_from is not None else None
    _device(config.device)
    data = prepare(config, pretrained.tokenizer if pretrained is not None else None)
    # one item of each split: the files open, parse and tokenise
    collate = getattr(data.train, "collate", _collate)
    collate([data.train[next(iter(data.sampler))]])
    if data.val is not None:
        collate([data.val[0]])
    model = _build_model(data, pretrained)
    return {"config": dataclasses.asdict(data.config), "model_task": data.model_task,
            "parameters": sum(p.numel() for p in model.parameters()), "classes": data.class_names,
            "data": data.summary}


def _check_fresh(out: str) -> None:
    if ckpt.read_pointer(out) is not None:
        raise OutputError(f"{out}: already holds a training run",
                          hint="continue it with --resume, or give another --out")


def _run(config: TrainConfig, resume_from: Path | None) -> dict:
    state, pretrained = None, None
    if resume_from is None:
        _check_fresh(config.out)
    if resume_from is None and config.init_from is not None:
        pretrained = ckpt.load_checkpoint(config.init_from)[0]
    device = _device(config.device)
    created_group = distributed.init(device)
    device = distributed.local_device(device)
    rank, ranks = distributed.world()
    torch.manual_seed(config.seed)
    step, model = 0, None
    if resume_from is not None:
        model, meta, state = ckpt.load_checkpoint(resume_from, with_state=True)
        step = int(meta["step"])
    fixed = model.tokenizer if model is not None else pretrained.tokenizer if pretrained is not None else None
    data = prepare(config, fixed, ranks)
    config, train_ds, sampler, val_ds = data.config, data.train, data.sampler, data.val
    if model is None:
        model = _build_model(data, pretrained)
    model.to(device).train()
    weights = None if data.class_weights is None else torch.tensor(data.class_weights, device=device)
    net = model
    if ranks > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    decay = [p for p in model.parameters() if p.dim() >= 2]  # matrices and embeddings; not norms and biases
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=config.lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(config))
    best = {"metric": None, "step": None}
    if state is not None:
        try:
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            best = state["best"]
            torch.set_rng_state(state["rng"]["torch"])
        except (KeyError, TypeError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{resume_from / ckpt.STATE}: does not fit this model ({e})") from None
    per_step = config.batch_size * config.grad_accum
    sampler.load_state_dict({"seed": config.seed, "epoch": 0, "consumed": step * per_step * ranks})

    out = Path(config.out)
    metrics_path = out / "metrics.csv"
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "config.json", (json.dumps(dataclasses.asdict(config), indent=2) + "\n").encode())
        if resume_from is not None:
            _write_metrics(metrics_path, [], keep_until=step)
    head = data.head

    def save(at_step: int, metric: float | None = None) -> Path:
        meta = {"step": at_step, "seed": config.seed, "head": head, "metric": metric,
                "train_config": dataclasses.asdict(config)}
        st = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "best": best,
              "rng": {"torch": torch.get_rng_state()}, "sampler": sampler.state_dict()}
        return ckpt.save_checkpoint(out, model, meta, st)

    last = config.stop_after or config.max_steps
    windows = iter(sampler)
    collate = getattr(train_ds, "collate", _collate)  # sequences pad to the batch's longest; windows stack
    losses: dict[int, float] = {}
    started, n_tokens, n_bases = time.perf_counter(), 0, 0
    bar = tqdm(total=last, initial=step, disable=not config.progress or rank != 0, desc=config.task, unit="step")
    while step < last:
        torch.manual_seed(_step_seed(config.seed, step))  # masks, LSH rotations, dropout of this step
        gen = torch.Generator().manual_seed(_step_seed(config.seed, step))
        total = 0.0
        for _ in range(config.grad_accum):
            drawn = [next(windows) for _ in range(config.batch_size * ranks)]
            batch = collate([train_ds[w] for w in drawn[rank * config.batch_size:(rank + 1) * config.batch_size]])
            with _autocast(device):
                loss, _ = forward_loss(net, config.task, batch, device, generator=gen,
                                       mask_fraction=config.mask_fraction, mask_span=config.mask_span,
                                       class_weights=weights)
            (loss / config.grad_accum).backward()
            total += float(loss.detach()) / config.grad_accum
            n_tokens += int(batch["token_mask"].sum()) * ranks
            n_bases += int(batch["valid"].sum()) * ranks
        total = distributed.mean(total, device)
        if not math.isfinite(total):
            raise NumericalError(f"training loss is {total} at step {step + 1}",
                                 hint="lower --lr; the last good checkpoint is in " + str(out / "checkpoints"))
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        lr = scheduler.get_last_lr()[0]
        scheduler.step()
        step += 1
        losses[step] = total
        elapsed = max(time.perf_counter() - started, 1e-9)
        rows = [(step, "train", "loss", f"{total:.6g}"), (step, "train", "lr", f"{lr:.6g}")]
        bar.set_postfix(loss=f"{total:.4f}", tok_s=f"{n_tokens / elapsed:,.0f}", bases_s=f"{n_bases / elapsed:,.0f}")
        bar.update(1)
        raise_if_terminated()
        if rank != 0:
            continue
        metric = None
        if val_ds is not None and (step % config.val_every == 0 or step == last):
            val = _validate(model, config, val_ds, device, weights)
            rows += [(step, "val", name, f"{value:.6g}") for name, value in val.items()]
            metric = val[MAIN_METRIC[config.task]]
        _write_metrics(metrics_path, rows)
        is_best = metric is not None and not math.isnan(metric) and (best["metric"] is None or metric > best["metric"])
        if is_best:
            best = {"metric": metric, "step": step}
        if step % config.ckpt_every == 0 or step == last or metric is not None:
            folder = save(step, metric)
            if is_best:
                ckpt.set_pointer(out, ckpt.BEST, folder, metric)
            ckpt.prune(out)
    bar.close()
    elapsed = time.perf_counter() - started
    summary = {"task": config.task, "step": step, "max_steps": config.max_steps, "device": str(device),
               "ranks": ranks, "final_loss": losses.get(step), "best": best,
               "checkpoint": str(ckpt.resolve(out)) if rank == 0 else None, "seconds": elapsed,
               "tokens_per_s": n_tokens / max(elapsed, 1e-9), "bases_per_s": n_bases / max(elapsed, 1e-9),
               "weights_sha256": hashlib.sha256(ckpt.weights_bytes(model)).hexdigest(), "losses": losses}
    if rank == 0:
        atomic_write(out / "summary.json", (json.dumps(summary, indent=2, default=str) + "\n").encode())
    if created_group:
        distributed.close()
    return summary
