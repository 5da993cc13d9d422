"""What a run trains on: its inputs opened and checked, turned into datasets, a sampler and class weights.

mlm, variant and pattern read windows of a reference (drawn by a seeded RandomWindowSampler);
classify reads labelled sequences (data/sequences.py). Every input of another task is refused.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from genoformer.coords import Interval, parse_region, read_bed
from genoformer.data.augment import Augmentation
from genoformer.data.datasets import SequenceDataset, WindowDataset
from genoformer.data.samplers import RandomWindowSampler, SequenceSampler
from genoformer.data.sequences import load_sequence_data, make_tokenizer
from genoformer.data.windows import check_window_size, tile
from genoformer.errors import UsageError
from genoformer.io.evidence import EVIDENCE_FEATURES
from genoformer.io.variant_classes import HOM_REF, VARIANT_CLASSES
from genoformer.tasks import SOFT_MASKED, TASKS, TOKEN_LOGITS, head_task, task_default
from genoformer.tokenize import KmerTokenizer, ProteinTokenizer
from genoformer.train.config import TrainConfig
from genoformer.train.labels import check_track_labels, check_variant_labels, log_counts

log = logging.getLogger(__name__)


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
    class_weights: list[float] | None = None  # variant: each class's loss weight; pattern: each class's positives
    # variant, balanced: the loss weight of a hom_ref base whose reads show another allele (train/losses.py)
    reference_candidate_weight: float | None = None
    augment: Augmentation | None = None  # what the training items go through (validation items never)

    def __post_init__(self) -> None:
        self.augment = Augmentation(self.tokenizer, rc=self.config.rc_augment, shift=self.config.shift_augment)

    @property
    def model_task(self) -> str:
        return head_task(self.config.task, bool(self.config.per_residue))

    @property
    def head(self) -> dict:
        head = {"n_classes": 0 if TASKS[self.model_task].head == TOKEN_LOGITS else len(self.class_names),
                "n_evidence": self.n_evidence, "evidence_features": list(EVIDENCE_FEATURES[:self.n_evidence]),
                "class_names": self.class_names}
        if self.config.task == "classify":
            head |= {"per_residue": bool(self.config.per_residue), "alphabet": self.config.alphabet}
        return head


def collate_fn(dataset: WindowDataset | SequenceDataset):
    """How `dataset`'s items become a batch: sequences pad to the batch's longest; windows stack."""
    return getattr(dataset, "collate", _stack)


def _stack(items: list[dict]) -> dict:
    return {key: torch.stack([it[key] for it in items]) for key, v in items[0].items() if isinstance(v, torch.Tensor)}


def prepare(config: TrainConfig, tokenizer: KmerTokenizer | ProteinTokenizer | None = None,
            ranks: int = 1) -> TrainData:
    """Open and check every input of `config`; `tokenizer` (from --init-from or a resumed run) is kept."""
    refused = [name for name in config.given_inputs() if name not in TASKS[config.task].inputs]
    if refused:
        raise UsageError(f"task {config.task} does not use --{refused[0].replace('_', '-')}")
    check_window_size(config.window)
    n_samples = config.max_steps * config.batch_size * config.grad_accum * ranks
    if config.task == "classify":
        return _sequence_data(config, tokenizer, n_samples)
    return _window_data(config, tokenizer, n_samples)


def _tokenizer(config: TrainConfig, alphabet: str, fixed: KmerTokenizer | ProteinTokenizer | None):
    """A new tokenizer for `alphabet`, or the checkpoint's (`fixed`) after checking it fits."""
    if fixed is None:
        k = config.k if config.k is not None else task_default(config.task, "k")
        return make_tokenizer(alphabet, k, config.stride)
    if fixed.kind != alphabet:
        raise UsageError(f"the checkpoint's tokenizer reads {fixed.kind} but the {config.task} inputs are {alphabet}")
    if config.k not in (None, fixed.k) or config.stride not in (None, fixed.stride):
        raise UsageError(f"k {config.k} / stride {config.stride} differ from the checkpoint's tokenizer "
                         f"(k {fixed.k}, stride {fixed.stride})", hint="leave out --k and --stride")
    return fixed


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
    from genoformer.io.alignments import Alignments
    from genoformer.io.fasta import Reference
    from genoformer.io.tracks import Tracks
    from genoformer.io.variants import TruthVariants

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
    training = train_iv or [Interval(c, 0, n) for c, n in ref.contigs.items() if n]
    longest = max(training, key=len)
    notes = []  # said once every input has passed its checks: a failing run prints its error alone
    if config.window > len(longest) >= tokenizer.k:
        # a longer window would be padding only (and a 1 Mb default costs minutes a step on a 30 kb genome)
        notes.append(f"window {config.window:,} is longer than the longest training region ({longest.to_region()}, "
                     f"{len(longest):,} bases): using window {len(longest):,}")
        config = dataclasses.replace(config, window=len(longest))
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
    class_names: list[str] = list(VARIANT_CLASSES) if config.task == "variant" else []
    if config.task == "pattern":
        if config.bed:
            sources["tracks"] = Tracks.from_files(config.bed, ref.contigs)
            class_names = sources["tracks"].class_names
        else:
            class_names = [SOFT_MASKED]
    sampler = RandomWindowSampler(train_iv, config.window, n_samples, seed=config.seed, contig_lengths=ref.contigs)
    train_ds = WindowDataset(ref, [], tokenizer, **sources)
    val_ds = None
    splits = {"training regions": training}
    if val_iv is not None:
        windows = tile(val_iv, config.window, contig_lengths=ref.contigs)[:config.val_windows]
        val_ds = WindowDataset(ref, windows, tokenizer, **sources)
        splits["validation windows"] = [w.to_interval() for w in windows if w.n_valid]
    n_evidence = len(EVIDENCE_FEATURES) if config.bam is not None else 0
    summary = {"train_bases": sum(len(iv) for iv in training), "val_windows": len(val_ds) if val_ds else 0}
    counts = _label_counts(config, class_names, ref, sources, splits)
    for note in notes:
        log.info("%s", note)
    if counts:
        log_counts(class_names, counts, splits, per_base=config.task == "pattern")
        summary["label_counts"] = {split: dict(zip(class_names, n)) for split, n in counts.items()}
    weights = reference_candidate = None
    if config.class_weights == "balanced" and config.task == "pattern":
        # each class's positive bases weigh as much as its negative ones; a class on no training base
        # (log_counts warns) or on every one has nothing to balance: weight 1
        bases = summary["train_bases"]
        weights = [(bases - n) / n if 0 < n < bases else 1.0 for n in counts["training regions"]]
    elif config.class_weights == "balanced":
        train_counts = counts["training regions"]
        # a class absent from the training regions is weighted as the rarest present one
        weights = [sum(train_counts) / (len(train_counts) * (c or min(n for n in train_counts if n)))
                   for c in train_counts]
        if config.bam is not None:
            # a reference base that reads contradict (an artefact: paralog reads, strand errors) is as hard a
            # decision as a variant base: weighed as hom_ref, a region's few hundred of them teach nothing
            non_ref = [w for i, w in enumerate(weights) if i != HOM_REF]
            reference_candidate = sum(non_ref) / len(non_ref)
            summary["reference_candidate_weight"] = reference_candidate
    elif config.class_weights != "none":
        weights = list(config.class_weights)
    if weights is not None:
        summary["class_weights"] = dict(zip(class_names, weights))
    return TrainData(config, tokenizer, train_ds, sampler, val_ds, class_names, n_evidence, summary, weights,
                     reference_candidate)


def _label_counts(config: TrainConfig, class_names: list[str], ref, sources: dict,
                  splits: dict[str, list]) -> dict[str, list[int]]:
    """Bases of each class per split (labels.py), checked to hold positives; {} for mlm (no labels)."""
    if config.task == "variant":
        return check_variant_labels(sources["variants"], sources["confident"], config.confident_bed, splits)
    if config.task == "pattern":
        tracks = sources.get("tracks")
        source = ", ".join(config.bed) if tracks is not None else f"{config.reference} (soft-masked bases)"
        return check_track_labels(class_names, ref, tracks, splits, source)
    return {}


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
