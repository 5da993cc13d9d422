"""Inference: a trained model over whole contigs or regions -> per-base predictions in HDF5.

Windows sit on a grid fixed by the contig alone (window_grid.py): window i covers
[i*step, i*step + window) with step = window - 2*margin (rounded down to the token stride, so
every window reads the same k-mer frame), and keeps only its centre [i*step + margin,
(i+1)*step + margin); the first window keeps its left edge from base 0, the last its right edge
to the contig end. Every kept base so
has at least `margin` bases of context on each side (but at contig ends), and, because the grid
does not move with the regions asked for, a base's prediction is the same whether it is
predicted alone or inside a larger run (LSH attention sees the whole window, so a grid that
moved with the region would change every prediction in it). Regions only choose which windows
run and which bases are written.

Windows stream in batches through the model (torch.inference_mode; bf16 autocast on GPU; LSH
rotations fixed by hash_seed) and each batch is written as soon as it is done, so memory stays
bounded by the batch, whatever the contig length. A full window of N bases without reads gives
the same output wherever it lies, so it is computed once and reused (N gaps cost no model time).
With `rc_average` (DNA models) each window is also run on the other strand (data.augment's
reverse complement of the window, reads included) and the two per-base outputs are averaged,
the reverse one laid back onto the forward bases (an insertion, predicted at the base before it
on each strand, so spreads over its anchor and the base after it).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from genoformer import __version__
from genoformer.coords import Interval, parse_region, read_bed
from genoformer.data.augment import reverse_complement_item
from genoformer.data.datasets import WindowDataset
from genoformer.devices import autocast, check_device, default_batch, resolve_device
from genoformer.errors import FastaError, InputError, NumericalError, OutputError, UsageError
from genoformer.interrupt import raise_if_terminated
from genoformer.io.checksums import contig_md5s
from genoformer.io.evidence import BASE_COLUMNS, Evidence
from genoformer.io.predictions import partial_path
from genoformer.io.variant_classes import check_variant_classes, forward_strand
from genoformer.model.heads import activate, batch_inputs
from genoformer.predict.grid import PlannedWindow, grid_step, iter_planned, plan_windows
from genoformer.predict.writer import PredictionWriter
from genoformer.tasks import PER_SEQUENCE, PREDICTED, TASKS, TRAIN_TASKS
from genoformer.data.windows import regions

log = logging.getLogger(__name__)

_MODEL_INPUTS = ("tokens", "token_mask", "valid", "bases", "soft_mask", "evidence")  # item keys the model reads


@dataclass
class PredictConfig:
    """What to predict and how. Coordinates in `regions` are samtools-style strings (1-based)."""
    model: str = ""  # run folder (its latest checkpoint) or a checkpoint folder
    reference: str = ""
    out: str = "predictions.h5"
    bam: str | None = None  # needed exactly when the model fuses read evidence
    regions: list[str] = field(default_factory=list)  # none (and no regions_bed): whole contigs
    regions_bed: str | None = None
    window: int | None = None  # None: the model's training window
    margin: int | None = None  # None: window // 4, rounded down to the token stride
    batch_size: int | None = None  # None: devices.default_batch
    device: str = "auto"
    hash_seed: int = 0  # fixes the LSH rotations; recorded in the output
    rc_average: bool = False  # DNA models: average each window's output with its reverse strand's
    resume: bool = False  # continue .<out>.partial left by an interrupted run
    force: bool = False  # replace an existing output (only once the new one is complete)
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("window", "margin", "batch_size", "hash_seed"):
            value = getattr(self, name)
            if value is None:
                continue
            low = 1 if name in ("window", "batch_size") else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UsageError(f"{name.replace('_', '-')} must be an integer >= {low}, got {value!r}")
        check_device(self.device)
        if not isinstance(self.rc_average, bool):
            raise UsageError(f"rc-average must be true or false, got {self.rc_average!r}")
        if not self.model or not self.reference:
            raise UsageError("give a model (--model) and a reference FASTA (--reference)",
                             hint="for a classify model, give the sequences to label with --sequences")


# ---------------------------------------------------------------------------------------------


def _load_model(path: str, hash_seed: int):
    from genoformer.model.checkpoint import load_checkpoint

    model, meta, _ = load_checkpoint(path, hash_seed=hash_seed)
    task = TASKS[meta["task"]]  # load_checkpoint refuses a task that is not in the registry
    if task.head == PER_SEQUENCE:
        # its recorded window is the longest sequence it accepted (1 Mb unless set): tiling a reference
        # with it ran for hours and wrote one label broadcast over every base
        raise UsageError(f"{path}: a {task.name} model labels whole sequences, not the bases of a reference",
                         hint="give the sequences with --sequences FILE (FASTA or CSV) instead of --reference")
    if not task.per_base:
        written = ", ".join(PREDICTED[:-1]) + f" and {PREDICTED[-1]}"
        trainable = "|".join(name for name in PREDICTED if name in TRAIN_TASKS)
        raise UsageError(f"{path}: predict writes {written} models; this {task.name} model "
                         f"({task.about}) has nothing per-base to write",
                         hint=f"fine-tune it first: genoformer train --task {trainable} --init-from ...")
    return model, meta


def _open_reference(path: str, model, model_path: str):
    from genoformer.io.fasta import Reference

    kind = model.tokenizer.kind
    try:
        return Reference(path, alphabet=kind)
    except FastaError as e:
        if "alphabet looks like" in str(e):
            raise FastaError(f"{path}: the model ({model_path}) reads {kind} "
                             f"({type(model.tokenizer).__name__} k={model.tokenizer.k}) but {str(e).split(': ', 1)[1]}",
                             hint=f"give a {kind} reference, or a model trained on this kind of sequence") from None
        raise


def _requested(config: PredictConfig, reference) -> list[Interval]:
    if not config.regions and config.regions_bed is None:
        return regions(None, reference.contigs)
    found = [parse_region(r, reference.contigs, source=str(reference.path)) for r in config.regions]
    if config.regions_bed is not None:
        bed = read_bed(config.regions_bed, reference.contigs)
        if not bed:
            raise UsageError(f"{config.regions_bed}: holds no intervals")
        found += bed
    return regions(found, reference.contigs)


def _check_output(config: PredictConfig) -> Path:
    out = Path(config.out)
    if out.is_dir():
        raise OutputError(f"{out}: is a folder; give a file name for --out")
    if out.exists() and not config.force:
        raise OutputError(f"{out}: already exists; not overwritten", hint="add --force to replace it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{out.parent}: cannot create the output folder ({e.strerror or e})") from None
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise OutputError(f"{out}: output folder {out.parent} is not writable")
    return out


# ---------------------------------------------------------------------------------------------


def predict(config: PredictConfig) -> dict:
    """Predict, write config.out, and return a summary: bases, windows, seconds, bases_per_s, out, ..."""
    started = time.perf_counter()
    out = _check_output(config)
    model, meta = _load_model(config.model, config.hash_seed)
    task, head = meta["task"], meta["head"]
    tokenizer = model.tokenizer
    uses_reads = int(head.get("n_evidence", 0)) > 0
    if uses_reads and not config.bam:
        raise UsageError(f"{config.model}: this {task} model reads read evidence; give the sample's --bam")
    if config.bam and not uses_reads:
        raise UsageError(f"{config.model}: this {task} model was trained without reads; --bam would be ignored",
                         hint="drop --bam, or use a model trained with --bam")
    window = config.window or int((meta.get("train_config") or {}).get("window") or 0)
    if not window:
        raise UsageError(f"{config.model}: the checkpoint records no training window; give --window")
    if window < tokenizer.k:
        raise UsageError(f"window {window:,} is smaller than the model's k = {tokenizer.k}")
    if config.rc_average and tokenizer.kind != "dna":
        raise UsageError(f"{config.model}: --rc-average reverse-complements DNA; this model reads {tokenizer.kind}")
    margin = config.margin if config.margin is not None else window // 4 // tokenizer.stride * tokenizer.stride
    step = grid_step(window, margin, tokenizer.stride)
    device = resolve_device(config.device)
    batch_size = config.batch_size or default_batch(window, device)

    reference = _open_reference(config.reference, model, config.model)
    alignments = None
    if config.bam:
        from genoformer.io.alignments import Alignments

        alignments = Alignments(config.bam, reference)
    intervals = _requested(config, reference)
    lengths = reference.contigs
    plan, n_windows = plan_windows(intervals, lengths, window, margin, step)
    md5 = contig_md5s(reference, list(plan))
    classes = [str(c) for c in head.get("class_names") or []]
    if len(classes) != int(head["n_classes"]):
        raise InputError(f"{config.model}: the head has {head['n_classes']} classes but names {len(classes)}")
    if task == "variant":
        check_variant_classes(classes, config.model)

    model_sha = meta["weights_sha256"]
    bam_path = str(Path(config.bam).resolve()) if config.bam else ""
    run_plan = json.dumps({"model_sha256": model_sha, "contig_md5": md5, "window": window, "margin": margin,
                           "step": step, "hash_seed": config.hash_seed, "bam": bam_path, "task": task,
                           "rc_average": config.rc_average,
                           "regions": [iv.to_region() for iv in intervals]}, sort_keys=True)
    attrs = {
        "genoformer_version": __version__, "model_sha256": model_sha,
        "model": json.dumps({"task": task, "model_config": meta["model_config"], "tokenizer": meta["tokenizer"],
                             "head": head}, sort_keys=True),
        "reference": str(Path(config.reference).resolve()), "contig_md5": json.dumps(md5, sort_keys=True),
        "command": shlex.join(sys.argv), "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hash_seed": config.hash_seed, "window": window, "margin": margin, "step": step,
        "predict_config": json.dumps(dataclasses.asdict(config), sort_keys=True), "bam": bam_path,
    }
    writer = PredictionWriter(out, task=task, classes=classes, contigs={c: lengths[c] for c in plan},
                              attrs=attrs, plan=run_plan, n_windows=n_windows,
                              variant_extras=task == "variant" and uses_reads, resume=config.resume)
    try:
        done = writer.done_mask()
        runner = _Runner(model, task, tokenizer, device, reference, alignments, window, config.rc_average)
        todo = (p for p in iter_planned(plan, intervals, lengths, window, margin, step) if not done[p.index])
        total = sum(len(iv) for iv in intervals)
        bases_before = _bases_done(plan, intervals, lengths, window, margin, step, done)
        bar = tqdm(total=total, initial=bases_before, unit="bp", unit_scale=True, desc="predict",
                   disable=not config.progress, file=sys.stderr, dynamic_ncols=True)
        n_run, n_bases = 0, 0
        with bar:
            for planned, results in runner.run(_batches(todo, batch_size)):
                for p, (probs, extras) in zip(planned, results):
                    for (a, b), ex in zip(p.writes, extras):
                        writer.write(p.contig, a, probs[a - p.window.start:b - p.window.start], ex)
                        n_bases += b - a
                        bar.update(b - a)
                writer.mark_done(np.array([p.index for p in planned]))
                n_run += len(planned)
                raise_if_terminated()
        writer.finish({"n_windows": n_windows, "bases": total}, config.force)
    except (KeyboardInterrupt, SystemExit):
        # an interrupted run (Ctrl-C, SIGTERM from a scheduler) keeps its partial for --resume
        writer.abort(keep=True)
        log.warning("interrupted; the windows done so far are kept in %s: rerun with --resume to continue",
                    partial_path(out))
        raise
    except BaseException:
        writer.abort(keep=False)
        raise
    finally:
        reference.close()
    seconds = time.perf_counter() - started
    return {"out": str(out), "task": task, "bases": total, "bases_predicted": n_bases, "windows": n_windows,
            "windows_run": n_run, "windows_resumed": int(done.sum()), "n_window_cached": runner.n_cached,
            "window": window, "margin": margin, "step": step, "batch_size": batch_size, "device": str(device),
            "hash_seed": config.hash_seed, "seconds": seconds, "bases_per_s": n_bases / max(seconds, 1e-9)}


def _bases_done(plan, intervals, lengths, window, margin, step, done) -> int:
    if not done.any():
        return 0
    return sum(b - a for p in iter_planned(plan, intervals, lengths, window, margin, step) if done[p.index]
               for a, b in p.writes)


def _batches(planned: Iterator[PlannedWindow], size: int) -> Iterator[list[PlannedWindow]]:
    batch = []
    for p in planned:
        batch.append(p)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


class _Runner:
    """Loads batches on a helper thread (FASTA, reads) while the model runs the previous one."""

    def __init__(self, model, task, tokenizer, device, reference, alignments, window, rc_average=False):
        self.model = model.to(device).eval()
        self.task, self.device, self.window, self.rc_average = task, device, window, rc_average
        self.tokenizer = tokenizer
        self.reference, self.alignments = reference, alignments
        self.dataset = WindowDataset(reference, [], tokenizer, alignments=alignments)
        self.n_token = tokenizer.n_tokens(window)
        # id of the all-N k-mer: a window made only of it (and no reads) has one output everywhere
        self.n_id = int(tokenizer.encode("N" * tokenizer.k)[0]) if tokenizer.kind == "dna" else None
        self.n_cached = 0
        self._n_output: np.ndarray | None = None

    def run(self, batches: Iterator[list[PlannedWindow]]) -> Iterator[tuple[list[PlannedWindow], list]]:
        with ThreadPoolExecutor(max_workers=1) as pool:
            pending = None
            for batch in batches:
                nxt = pool.submit(self._load, batch)
                if pending is not None:
                    yield self._compute(*pending.result())
                pending = nxt
            if pending is not None:
                yield self._compute(*pending.result())

    def _load(self, batch: list[PlannedWindow]):
        items = [self.dataset[p.window] for p in batch]
        extras = [[self._extras(p, item, a, b) for a, b in p.writes] for p, item in zip(batch, items)]
        return batch, items, extras

    def _extras(self, p: PlannedWindow, item: dict, a: int, b: int) -> dict | None:
        """alt / depth / deletion_fraction over [a, b) from the reads (variant models that read a BAM)."""
        if self.task != "variant" or "evidence" not in item:
            return None
        ev = item["evidence"][a - p.window.start:b - p.window.start].numpy()
        ref = self.reference.fetch(p.contig, a, b).tobytes().upper()
        counts = ev[:, list(BASE_COLUMNS)].copy()
        ref_col = np.frombuffer(ref, np.uint8)
        for col, base in enumerate(b"ACGT"):
            counts[ref_col == base, col] = -1  # the reference base is never the alt
        best = counts.argmax(1)
        alt = np.where(counts.max(1) > 0, np.frombuffer(b"ACGT", np.uint8)[best], 0).astype(np.uint8)
        depth = ev[:, Evidence.depth]
        deletion_fraction = np.divide(ev[:, Evidence.deletions], depth, out=np.zeros_like(depth), where=depth > 0)
        return {"alt": alt, "depth": np.minimum(depth, 65535).astype(np.uint16),
                "deletion_fraction": deletion_fraction.astype(np.float16)}

    def _is_n_window(self, item: dict) -> bool:
        return (self.n_id is not None and item["n_valid"] == self.window and bool((item["tokens"] == self.n_id).all())
                and not bool(item["soft_mask"].any()) and ("evidence" not in item or not bool(item["evidence"].any())))

    def _compute(self, batch, items, extras):
        is_n = [self._is_n_window(it) for it in items]
        if any(is_n) and self._n_output is None:
            self._n_output = self._forward([items[is_n.index(True)]])[0]
        rest = [it for it, n in zip(items, is_n) if not n]
        outputs = iter(self._forward(rest)) if rest else iter(())
        probs = []
        for p, it, n in zip(batch, items, is_n):
            probs.append(self._n_output if n else next(outputs))
            self.n_cached += n
            if not np.isfinite(probs[-1]).all():
                w = p.window
                raise NumericalError(f"non-finite predictions in window {p.contig}:{w.start + 1:,}-{w.valid_end:,}",
                                     hint="the model or its inputs are broken; nothing was written at --out")
        return batch, list(zip(probs, extras))

    def _forward(self, items: list[dict]) -> list[np.ndarray]:
        """float32 [W, C] probabilities per item, with the task's activation (softmax: variant genotypes,
        residue classes; sigmoid: pattern classes)."""
        probs = self._probabilities(items)
        if not self.rc_average:
            return probs
        reverse = self._probabilities([reverse_complement_item(it, self.tokenizer) for it in items])
        for p, r, it in zip(probs, reverse, items):
            n = it["n_valid"]
            mirrored = forward_strand(r[:n][::-1]) if self.task == "variant" else r[:n][::-1]
            p[:n] = (p[:n] + mirrored) / 2  # the reverse strand's base i is the forward base n-1-i
        return probs

    def _probabilities(self, items: list[dict]) -> list[np.ndarray]:
        batch = {key: torch.stack([it[key] for it in items]) for key in _MODEL_INPUTS if key in items[0]}
        try:
            with torch.inference_mode(), autocast(self.device):
                logits = self.model(**batch_inputs(batch, self.device)).float()
        except torch.cuda.OutOfMemoryError:
            raise OutputError(f"GPU out of memory on a batch of {len(items)} windows of {self.window:,} bases",
                              hint="reduce --batch-size or --window") from None
        return list(activate(self.task, logits).cpu().numpy())
