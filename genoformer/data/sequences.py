"""Labelled sequence sets for the `classify` task: reading and the train/validation split.

Input forms (plain or gzipped):
  CSV / TSV (.csv, .tsv)    a header row; the sequence in a column named seq, sequence or input, the label
                            in the `label_field` column (default "label"). Genomic Benchmarks' `seq,label`.
  labelled FASTA            `>id label=X` (a `key=value` word of the description, key = label_field)
                            or `>id|X` (the text after the last '|' of the id).
  FASTA + residue labels    `residue_labels`: a FASTA with the same ids holding one label letter per
                            residue (FLIP / NetSurfP `sampled.fasta`); optional `residue_mask`: a FASTA of
                            0/1 per residue (0 = unresolved, not scored).
Per-residue labels in a CSV are one label per residue, space-separated or as one string of the
sequence's length (CB513's `dssp3` column). `key=value` words of FASTA headers (of either file) are
tags, which can pick the validation set (`val_tag`, e.g. VALIDATION=True) or drop records
(`exclude_tag`, e.g. SET=test).

datasets.SequenceDataset tokenises them; samplers.SequenceSampler draws them.
"""
from __future__ import annotations

import csv
import gzip
import io
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genoformer.errors import InputError, UsageError
from genoformer.tokenize import KmerTokenizer, ProteinTokenizer

log = logging.getLogger(__name__)

SEQUENCE_COLUMNS = ("seq", "sequence", "input")
DEFAULT_K = {"dna": 6, "protein": 1}
_DNA_LETTERS = frozenset("ACGTUN")


@dataclass
class LabelledSequences:
    """Sequences with one label each (per_residue False) or one label per residue (per_residue True)."""

    path: str
    names: list[str] = field(default_factory=list)
    where: list[str] = field(default_factory=list)  # "line 12" / "record 1es5-A", for error messages
    sequences: list[str] = field(default_factory=list)
    labels: list = field(default_factory=list)  # str per sequence, or list[str] per residue
    masks: list = field(default_factory=list)  # bool [n] scored residues, or None
    tags: list[dict[str, str]] = field(default_factory=list)
    per_residue: bool = False

    def __len__(self) -> int:
        return len(self.sequences)

    def subset(self, indices) -> LabelledSequences:
        pick = [int(i) for i in indices]
        return LabelledSequences(self.path, *([getattr(self, name)[i] for i in pick]
                                              for name in ("names", "where", "sequences", "labels", "masks", "tags")),
                                 per_residue=self.per_residue)


def _open_text(path: Path) -> io.TextIOBase:
    try:
        # utf-8-sig: spreadsheet exports start with a byte-order mark that would rename the first column
        if path.name.endswith(".gz"):
            return io.TextIOWrapper(gzip.open(path), encoding="utf-8-sig", newline="")
        return path.open(encoding="utf-8-sig", newline="")
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None


def _fasta_records(path: Path) -> Iterator[tuple[str, dict[str, str], str, int]]:
    """(id, tags, sequence, header line) of each record."""
    name, tags, chunks, line_no, start = None, {}, [], 0, 0
    try:
        with _open_text(path) as fh:
            for line_no, line in enumerate(fh, 1):
                line = line.strip()
                if line.startswith(">"):
                    if name is not None:
                        yield name, tags, "".join(chunks), start
                    words = line[1:].split()
                    if not words:
                        raise InputError(f"{path}: line {line_no}: empty FASTA header")
                    name, chunks, start = words[0], [], line_no
                    tags = dict(w.split("=", 1) for w in words[1:] if "=" in w)
                elif line:
                    if name is None:
                        raise InputError(f"{path}: line {line_no}: sequence before the first '>' header "
                                         "(not a FASTA file?)")
                    chunks.append(line)
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text FASTA/CSV file (binary content near line {line_no + 1})") from None
    except (OSError, EOFError) as e:  # gzip errors
        raise InputError(f"{path}: cannot read ({e})") from None
    if name is not None:
        yield name, tags, "".join(chunks), start


def _residue_labels(text: str) -> list[str]:
    return text.split() if any(c.isspace() for c in text.strip()) else list(text.strip())


@dataclass(frozen=True)
class SequenceRecord:
    """One sequence of a file; `where` ("line 12" / "record x (line 3)") places it for error messages."""
    name: str
    where: str
    sequence: str
    label: str | None  # None where the file has no label for it (iter_sequences only)


def _csv_records(path: Path, label_field: str, require_label: bool) -> Iterator[SequenceRecord]:
    delimiter = "\t" if path.name.removesuffix(".gz").endswith(".tsv") else ","
    try:
        with _open_text(path) as fh:
            rows = csv.reader(fh, delimiter=delimiter)
            header = [h.strip() for h in next(rows, [])]
            lower = [h.lower() for h in header]
            seq_col = next((lower.index(c) for c in SEQUENCE_COLUMNS if c in lower), None)
            if seq_col is None:
                raise InputError(f"{path}: no sequence column (looked for {', '.join(SEQUENCE_COLUMNS)}; "
                                 f"columns: {', '.join(header) or 'none'})")
            if label_field not in header and require_label:
                raise InputError(f"{path}: no {label_field!r} label column (columns: {', '.join(header)})",
                                 hint="name the label column with --label-field")
            label_col = header.index(label_field) if label_field in header else None
            id_col = lower.index("id") if "id" in lower else None
            last_col = max(c for c in (seq_col, label_col, id_col) if c is not None)
            for line_no, row in enumerate(rows, 2):
                if not row or not "".join(row).strip():
                    continue
                if len(row) <= last_col:
                    raise InputError(f"{path}: line {line_no}: {len(row)} fields, expected {len(header)}")
                yield SequenceRecord(row[id_col] if id_col is not None else f"line {line_no}", f"line {line_no}",
                                     "".join(row[seq_col].split()),  # CB513 spaces residues
                                     row[label_col].strip() if label_col is not None else None)
    except UnicodeDecodeError:
        raise InputError(f"{path}: not a text CSV file (binary content)") from None
    except csv.Error as e:
        raise InputError(f"{path}: not a valid CSV file ({e})") from None
    except (OSError, EOFError) as e:
        raise InputError(f"{path}: cannot read ({e})") from None


def _read_csv(path: Path, label_field: str) -> LabelledSequences:
    out = LabelledSequences(str(path))
    for record in _csv_records(path, label_field, require_label=True):
        out.names.append(record.name)
        out.where.append(record.where)
        out.sequences.append(record.sequence)
        out.labels.append(record.label)
        out.masks.append(None)
        out.tags.append({})
    return out


def _read_fasta(path: Path, label_field: str, residue_labels: Path | None,
                residue_mask: Path | None) -> LabelledSequences:
    out = LabelledSequences(str(path), per_residue=residue_labels is not None)
    extra = {p: {name: (tags, seq) for name, tags, seq, _ in _fasta_records(p)}
             for p in (residue_labels, residue_mask) if p is not None}
    for name, tags, seq, line_no in _fasta_records(path):
        where = f"record {name} (line {line_no})"
        tags = dict(tags)
        mask = None
        if residue_labels is not None:
            if name not in extra[residue_labels]:
                raise InputError(f"{residue_labels}: no labels for sequence {name} of {path.name}")
            label_tags, label = extra[residue_labels][name]
            tags |= label_tags
        elif label_field in tags:
            label = tags[label_field]
        elif "|" in name:
            name, label = name.rsplit("|", 1)
        else:
            raise InputError(f"{path}: {where} has no label",
                             hint=f"write headers as '>id {label_field}=X' or '>id|X'")
        if residue_mask is not None:
            if name not in extra[residue_mask]:
                raise InputError(f"{residue_mask}: no mask for sequence {name} of {path.name}")
            text = extra[residue_mask][name][1]
            if set(text) - {"0", "1"}:
                raise InputError(f"{residue_mask}: mask of {name} holds characters other than 0 and 1")
            mask = np.frombuffer(text.encode(), dtype=np.uint8) == ord("1")
        out.names.append(name)
        out.where.append(where)
        out.sequences.append(seq)
        out.labels.append(label)
        out.masks.append(mask)
        out.tags.append(tags)
    return out


def _is_table(path: Path) -> bool:
    return path.name.removesuffix(".gz").endswith((".csv", ".tsv"))


def read_sequences(path: str, *, label_field: str = "label", residue_labels: str | None = None,
                   residue_mask: str | None = None, per_residue: bool | None = None) -> LabelledSequences:
    """Read a labelled sequence file (see the module docstring); per_residue None: decided from the labels."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such sequence file")
    is_csv = _is_table(p)
    if is_csv and (residue_labels or residue_mask):
        raise UsageError("--residue-labels and --residue-mask go with FASTA sequences, not a CSV")
    if residue_mask and not residue_labels:
        raise UsageError("--residue-mask needs --residue-labels")
    if residue_labels and per_residue is False:
        raise UsageError("--residue-labels gives one label per residue; it does not go with --per-sequence")
    seqs = _read_csv(p, label_field) if is_csv else _read_fasta(
        p, label_field, Path(residue_labels) if residue_labels else None, Path(residue_mask) if residue_mask else None)
    if not len(seqs):
        raise InputError(f"{p}: holds no sequences")
    for i, (seq, label) in enumerate(zip(seqs.sequences, seqs.labels)):
        if not seq or not label:
            raise InputError(f"{p}: {seqs.where[i]}: empty {'sequence' if not seq else 'label'}")
    if per_residue is None:  # every label has exactly one entry per residue
        per_residue = seqs.per_residue or all(len(s) > 1 and len(_residue_labels(lab)) == len(s)
                                              for s, lab in zip(seqs.sequences, seqs.labels))
    if per_residue:
        seqs.labels = [_residue_labels(lab) for lab in seqs.labels]
        for i, (seq, lab, mask) in enumerate(zip(seqs.sequences, seqs.labels, seqs.masks)):
            if len(lab) != len(seq) or (mask is not None and len(mask) != len(seq)):
                what = "labels" if len(lab) != len(seq) else "mask entries"
                raise InputError(f"{p}: {seqs.where[i]}: {len(lab) if what == 'labels' else len(mask)} residue "
                                 f"{what} for a sequence of {len(seq)}",
                                 hint=None if residue_labels else "per-sequence labels? then drop --per-residue")
    seqs.per_residue = per_residue
    return seqs


def iter_sequences(path: str, label_field: str = "label") -> Iterator[SequenceRecord]:
    """Stream the sequences of a CSV/TSV or FASTA (plain or gzipped) to label them: labels optional.

    A CSV needs only its sequence column; a FASTA label comes only from a `label_field=` header
    tag, and the id is kept whole ('>sp|P69905|HBA' is a name here, not 'sp|P69905' labelled HBA).
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such sequence file")
    if _is_table(p):
        yield from _csv_records(p, label_field, require_label=False)
        return
    for name, tags, seq, line_no in _fasta_records(p):
        yield SequenceRecord(name, f"record {name} (line {line_no})", seq, tags.get(label_field))


def detect_alphabet(seqs: LabelledSequences) -> str:
    """"dna" when at least 90 % of the letters are ACGTUN (IUPAC codes are also amino-acid letters), else "protein"."""
    total = sum(len(s) for s in seqs.sequences)
    dna = sum(sum(s.upper().count(c) for c in _DNA_LETTERS) for s in seqs.sequences)
    return "dna" if dna >= 0.9 * total else "protein"


def make_tokenizer(alphabet: str, k: int | None, stride: int | None) -> KmerTokenizer | ProteinTokenizer:
    cls = KmerTokenizer if alphabet == "dna" else ProteinTokenizer
    return cls(DEFAULT_K[alphabet] if k is None else k, stride)


def _sort_classes(names: set[str]) -> list[str]:
    try:  # numeric labels in numeric order (Genomic Benchmarks' 0, 1)
        return sorted(names, key=int)
    except ValueError:
        return sorted(names)


def class_names(train: LabelledSequences) -> list[str]:
    """Sorted labels of the training set (scored residues only); InputError with fewer than two."""
    if train.per_residue:
        found = {lab for labs, mask in zip(train.labels, train.masks)
                 for lab in (labs if mask is None else np.asarray(labs, dtype=object)[mask])}
    else:
        found = set(train.labels)
    if len(found) < 2:
        raise InputError(f"{train.path}: the training sequences hold only one class "
                         f"({', '.join(map(repr, found)) or 'none'}): nothing to classify")
    return _sort_classes(found)


def split(seqs: LabelledSequences, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices: a seeded `fraction`, stratified by label for per-sequence labels."""
    rng = np.random.Generator(np.random.PCG64([seed, 7]))
    groups = ([np.arange(len(seqs))] if seqs.per_residue else
              [np.flatnonzero(np.array(seqs.labels, dtype=object) == lab) for lab in sorted(set(seqs.labels))])
    val = [rng.permutation(g)[:int(round(fraction * len(g)))] for g in groups]
    val = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    if fraction > 0 and not val.size:
        val = rng.permutation(len(seqs))[:1]
    train = np.setdiff1d(np.arange(len(seqs)), val)
    if not train.size:
        raise InputError(f"{seqs.path}: {len(seqs)} sequences leave none for training at val-fraction {fraction}")
    return train, val


def _tag(spec: str, option: str) -> tuple[str, str]:
    key, sep, value = spec.partition("=")
    if not sep or not key:
        raise UsageError(f"{option} must be KEY=VALUE (e.g. VALIDATION=True), got {spec!r}")
    return key, value


@dataclass
class SequenceData:
    train: LabelledSequences
    val: LabelledSequences | None
    alphabet: str
    per_residue: bool
    class_names: list[str]


def load_sequence_data(sequences: str, *, val_sequences: str | None = None, val_fraction: float = 0.1,
                       val_tag: str | None = None, exclude_tag: str | None = None, label_field: str = "label",
                       residue_labels: str | None = None, residue_mask: str | None = None,
                       per_residue: bool | None = None, alphabet: str | None = None,
                       seed: int = 0) -> SequenceData:
    """Read and split the sequences: validation from `val_sequences`, else `val_tag`, else a seeded fraction."""
    if val_sequences and val_tag:
        raise UsageError("give either --val-sequences or --val-tag, not both")
    options = dict(label_field=label_field, residue_labels=residue_labels, residue_mask=residue_mask)
    seqs = read_sequences(sequences, per_residue=per_residue, **options)
    if exclude_tag:
        key, value = _tag(exclude_tag, "--exclude-tag")
        seqs = seqs.subset(i for i, t in enumerate(seqs.tags) if t.get(key) != value)
        if not len(seqs):
            raise InputError(f"{sequences}: --exclude-tag {exclude_tag} leaves no sequences")
    if val_sequences:
        if _is_table(Path(val_sequences)):  # residue labels of a CSV sit in its own label column
            options = dict(label_field=label_field)
        train, val = seqs, read_sequences(val_sequences, per_residue=seqs.per_residue, **options)
    elif val_tag:
        key, value = _tag(val_tag, "--val-tag")
        picked = np.array([t.get(key) == value for t in seqs.tags], dtype=bool)
        if not picked.any():
            raise InputError(f"{sequences}: no sequence is tagged {val_tag} (for --val-tag)")
        train, val = seqs.subset(np.flatnonzero(~picked)), seqs.subset(np.flatnonzero(picked))
        if not len(train):
            raise InputError(f"{sequences}: every sequence is tagged {val_tag}; none is left for training")
    else:
        train_idx, val_idx = split(seqs, val_fraction, seed)
        train, val = seqs.subset(train_idx), (seqs.subset(val_idx) if val_idx.size else None)
    classes = class_names(train)
    if val is not None:
        known = set(classes)
        for i, labs in enumerate(val.labels):
            unknown = (set(labs) if val.per_residue else {labs}) - known
            if unknown:
                raise InputError(f"{val.path}: {val.where[i]}: label {sorted(unknown)[0]!r} is not among the "
                                 f"training classes ({', '.join(classes)})")
    found = detect_alphabet(seqs)
    return SequenceData(train, val, alphabet or found, seqs.per_residue, classes)
