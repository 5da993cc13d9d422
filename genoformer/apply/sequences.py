"""`genoformer predict --sequences`: a classify model's labels for new sequences.

Input: FASTA, gzip FASTA or a CSV/TSV with a sequence column (data.sequences.iter_sequences);
labels are optional and, where present, copied to the outputs beside the predictions.

Length: each sequence may be up to the model's window (the longest it accepted in training);
a longer one is refused, naming it, before anything is written. It is not cut or windowed: a
label for part of a sequence is not the sequence's label.

Order and batching: sequences are read a chunk at a time (two passes over the file: the first
checks every record, so a bad one fails the run before any model time), grouped by their
padded token length (the encoder pads to its length multiple, so an input of the same padded
length runs exactly as it would alone: a sequence's probabilities do not depend on its batch),
and written in input order.

Outputs, each written under a temporary name and renamed only when complete (outputs.staged):
- `out` (HDF5, format "genoformer-sequence-predictions" 1): `names`, `length`, `probs` float32
  ([N, C] per sequence; [sum of lengths, C] per residue, sequence i at rows offsets[i]:offsets[i+1]),
  `labels` where the input had any; attributes: classes, task, complete, provenance (provenance.py).
- beside it (`companion_path`): a TSV (id, label if any, predicted class, one probability column per
  class) for per-sequence models; a FASTA of predicted labels, one per residue, for per-residue models.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from genoformer.apply.model import AppliedModel, load_model, probabilities
from genoformer.apply.provenance import provenance
from genoformer.data.sequences import SequenceRecord, iter_sequences
from genoformer.errors import InputError, UsageError
from genoformer.interrupt import raise_if_terminated
from genoformer.outputs import close_hdf5, discard_hdf5, hdf5_write_error, open_hdf5, refuse_existing, staged

FORMAT, FORMAT_VERSION = "genoformer-sequence-predictions", 1
CHUNK = 4096  # sequences read, grouped and written together
BATCH_RESIDUES = 65_536  # default batch: about this many padded residues per forward pass


@dataclass
class SequencesConfig:
    model: str = ""
    sequences: str = ""
    out: str = "sequences.h5"
    label_field: str = "label"
    batch_size: int | None = None  # None: about BATCH_RESIDUES residues per batch
    device: str = "auto"
    hash_seed: int = 0
    force: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not self.model or not self.sequences:
            raise UsageError("give a model (--model) and sequences (--sequences)")
        if self.batch_size is not None and (isinstance(self.batch_size, bool) or self.batch_size < 1):
            raise UsageError(f"batch-size must be an integer >= 1, got {self.batch_size!r}")


def companion_path(out: str | Path, per_residue: bool) -> Path:
    """The TSV (per-sequence) or label FASTA (per-residue) written beside the HDF5 `out`."""
    out = Path(out)
    return out.with_name(out.stem + (".labels.fa" if per_residue else ".tsv"))


def check_model(am: AppliedModel) -> None:
    """UsageError unless the model labels sequences (task classify, per sequence or per residue)."""
    if am.labels_sequences:
        return
    if am.task == "mlm":
        raise UsageError(f"{am.path}: an mlm model predicts masked tokens; it has no classes to label "
                         "sequences with", hint="score variants zero-shot with `genoformer score-variants`, "
                                                "or fine-tune it: genoformer train --task classify --init-from")
    raise UsageError(f"{am.path}: a {am.task} model predicts each base along a reference; --sequences is for "
                     "classify models", hint="give the sequences as a FASTA with --reference (each one is a "
                                             "contig)" + (" and the reads with --bam" if am.uses_reads else ""))


# ---------------------------------------------------------------------------------------------


def _checked(am: AppliedModel, path: str, label_field: str) -> tuple[int, int, bool]:
    """First pass: every record non-empty, within the window, in the model's alphabet.
    Returns (sequences, residues, any label)."""
    window = am.window
    n = residues = 0
    labelled = False
    for rec in iter_sequences(path, label_field):
        if not rec.sequence:
            raise InputError(f"{path}: {rec.where}: empty sequence")
        if window is not None and len(rec.sequence) > window:
            raise InputError(f"{path}: {rec.where}: {len(rec.sequence):,} residues, longer than the model's "
                             f"window ({window:,}); longer sequences are refused, not cut",
                             hint="split or trim them to the window first")
        try:
            am.tokenizer.encode(rec.sequence)
        except InputError as e:
            raise InputError(f"{path}: {rec.where}: {e} (the model reads {am.tokenizer.kind})") from None
        n, residues = n + 1, residues + len(rec.sequence)
        labelled |= rec.label is not None
    if not n:
        raise InputError(f"{path}: holds no sequences")
    return n, residues, labelled


def _chunks(records: Iterator[SequenceRecord]) -> Iterator[list[SequenceRecord]]:
    chunk = []
    for rec in records:
        chunk.append(rec)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _groups(am: AppliedModel, chunk: list[SequenceRecord], batch_size: int | None) -> Iterator[list[int]]:
    """Indices into `chunk` in batches of equal padded token length (see the module docstring)."""
    tok, multiple = am.tokenizer, am.length_multiple
    padded = [-(-tok.n_tokens(len(r.sequence)) // multiple) * multiple for r in chunk]
    order = sorted(range(len(chunk)), key=padded.__getitem__)
    start = 0
    while start < len(order):
        size = padded[order[start]]
        same = start
        while same < len(order) and padded[order[same]] == size:
            same += 1
        per_batch = batch_size or max(1, BATCH_RESIDUES // max(size * tok.stride, 1))
        for s in range(start, same, per_batch):
            yield order[s:min(s + per_batch, same)]
        start = same


class _Writer:
    """The HDF5 file and its companion, pre-sized (the first pass counted them), filled chunk by chunk."""

    def __init__(self, h5: Path, out: Path, companion: Path, am: AppliedModel, n: int, residues: int,
                 labelled: bool, attrs: dict):
        self.per_residue, self.classes, self.out = am.per_base, am.classes, out
        self.labelled = labelled
        self.text = companion.open("w")
        self.f = open_hdf5(h5, out)
        try:
            self._layout(am, n, residues, attrs)
        except BaseException as e:
            self.discard()
            raise hdf5_write_error(e, out) or e from None
        self.joiner = "" if all(len(c) == 1 for c in self.classes) else " "
        if not self.per_residue:
            label = ["label"] if labelled else []
            self.text.write("\t".join(["id", *label, "predicted", *(f"p_{c}" for c in self.classes)]) + "\n")
        self.n, self.row = 0, 0

    def _layout(self, am: AppliedModel, n: int, residues: int, attrs: dict) -> None:
        self.f.attrs.update(attrs | {"format": FORMAT, "format_version": FORMAT_VERSION, "complete": False,
                                     "task": am.task, "classes": self.classes, "n_sequences": n})
        text = h5py.string_dtype()
        self.names = self.f.create_dataset("names", (n,), dtype=text)
        self.length = self.f.create_dataset("length", (n,), dtype=np.int64)
        rows = residues if self.per_residue else n
        self.probs = self.f.create_dataset("probs", (rows, len(self.classes)), dtype=np.float32,
                                           chunks=(min(rows, 65_536), len(self.classes)), compression="gzip",
                                           compression_opts=4, shuffle=True)
        self.probs.attrs["classes"] = self.classes
        self.labels = self.f.create_dataset("labels", (n,), dtype=text) if self.labelled else None
        self.offsets = self.f.create_dataset("offsets", (n + 1,), dtype=np.int64) if self.per_residue else None

    def write(self, records: list[SequenceRecord], probs: list[np.ndarray]) -> None:
        try:
            self._write_hdf5(records, probs)
        except (OSError, RuntimeError) as e:  # h5py's: a full disk names the HDF5 output (exit 4)
            raise hdf5_write_error(e, self.out) or e from None
        if self.per_residue:
            for r, p in zip(records, probs):
                self.text.write(f">{r.name}\n{self.joiner.join(self.classes[i] for i in p.argmax(1))}\n")
        else:
            for r, p in zip(records, probs):
                label = [r.label or ""] if self.labels is not None else []
                self.text.write("\t".join([r.name, *label, self.classes[int(p.argmax())],
                                           *(f"{v:.6g}" for v in p)]) + "\n")
        self.n += len(records)

    def _write_hdf5(self, records: list[SequenceRecord], probs: list[np.ndarray]) -> None:
        k = len(records)
        s = slice(self.n, self.n + k)
        self.names[s] = [r.name for r in records]
        self.length[s] = [len(r.sequence) for r in records]
        if self.labels is not None:
            self.labels[s] = [r.label or "" for r in records]
        if self.per_residue:
            stacked = np.concatenate(probs)
            self.offsets[self.n + 1:self.n + k + 1] = self.row + np.cumsum([len(p) for p in probs])
            self.probs[self.row:self.row + len(stacked)] = stacked
            self.row += len(stacked)
        else:
            self.probs[s] = np.stack(probs)

    def finish(self) -> None:
        """Mark the file complete, then flush and close both (a failed flush is OutputError naming it)."""
        self.f.attrs["complete"] = True
        close_hdf5(self.f, self.out)
        self.text.close()

    def discard(self) -> None:
        """Close both without finishing (staged() then removes them)."""
        discard_hdf5(self.f)
        self.text.close()


def predict_sequences(config: SequencesConfig) -> dict:
    """Label config.sequences with a classify model; write config.out and its companion; return a summary."""
    started = time.perf_counter()
    out = refuse_existing(config.out, config.force)
    am = load_model(config.model, config.device, config.hash_seed)
    check_model(am)
    per_residue = am.per_base
    companion = refuse_existing(companion_path(out, per_residue), config.force)
    n, residues, labelled = _checked(am, config.sequences, config.label_field)
    attrs = provenance(am, config, {"sequences": config.sequences}) | {"window": am.window or 0}
    bar = tqdm(total=n, unit="seq", desc="predict", disable=not config.progress, file=sys.stderr,
               dynamic_ncols=True)
    with staged(out, ".h5") as tmp_h5, staged(companion) as tmp_text, bar:
        writer = _Writer(tmp_h5, out, tmp_text, am, n, residues, labelled, attrs)
        try:  # closed before staged() renames (or removes) the files; a failed HDF5 file is discarded
            for chunk in _chunks(iter_sequences(config.sequences, config.label_field)):
                results: list[np.ndarray | None] = [None] * len(chunk)
                for batch in _groups(am, chunk, config.batch_size):
                    seqs = [np.frombuffer(chunk[i].sequence.encode(), np.uint8) for i in batch]
                    longest = max(len(s) for s in seqs)
                    probs = probabilities(am, seqs, longest, what=f"{config.sequences}: {chunk[batch[0]].where}")
                    for i, p, seq in zip(batch, probs, seqs):
                        results[i] = p[:len(seq)] if per_residue else p
                    bar.update(len(batch))
                    raise_if_terminated()
                writer.write(chunk, results)
            if writer.n != n:
                raise InputError(f"{config.sequences}: changed while it was read ({writer.n:,} sequences, "
                                 f"{n:,} before)")
        except BaseException:
            writer.discard()
            raise
        writer.finish()
    seconds = time.perf_counter() - started
    return {"out": str(out), "table" if not per_residue else "labels": str(companion), "task": am.task,
            "sequences": n, "residues": residues, "seconds": seconds, "sequences_per_s": n / max(seconds, 1e-9)}
