"""torch Datasets: windows of a reference (+ reads, truth variants, annotation tracks), labelled sequences.

Windows read their sources through one per-base contract (genoformer.io.sources). Sources open
their file handles lazily per process, so a DataLoader with workers gives each worker its own
handles; the dataset itself holds no open file.
Sequences longer than the window are cut to their first `window` residues; a batch of sequences is
padded to its longest: [PAD] tokens (token_mask False) and unscored residues (label -100).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from genoformer.coords import Interval
from genoformer.data.windows import Window
from genoformer.errors import FastaError, InputError, UsageError
from genoformer.io.sources import UNSCORED, PerBaseSource
from genoformer.tokenize import KmerTokenizer, ProteinTokenizer, soft_mask

if TYPE_CHECKING:
    from genoformer.data.sequences import LabelledSequences
    from genoformer.io.alignments import Alignments
    from genoformer.io.fasta import Reference
    from genoformer.io.tracks import Tracks
    from genoformer.io.variants import TruthVariants

IGNORE_INDEX = UNSCORED  # torch.nn.functional.cross_entropy's default ignore_index

log = logging.getLogger(__name__)


class WindowDataset(Dataset):
    """One item per window: tokens plus optional per-base read evidence and labels.

    An item is a dict of tensors (W bases, T = tokenizer.n_tokens(W) tokens):
      tokens int64 [T]       k-mers of the real bases, then [PAD] tokens
      token_mask bool [T]    False for [PAD] tokens (those holding no real base)
      valid bool [W]         False for padding bases
      bases int64 [W]        letter codes (tokenizer.codes: 0-4 for A C G T N), N (tokenizer.pad_code) at padding
      soft_mask bool [W]     lowercase (soft-masked) reference bases
      evidence float32 [W, F]   with `alignments` (F = len(EVIDENCE_FEATURES)); 0 at padding
      genotype, variant_type int64 [W]   with `variants`; -100 at unscored and padding bases
      tracks float32 [W, C]  with `tracks`; 0 at padding
      contig str, start int, n_valid int
    Every source is read through the per-base contract (genoformer.io.sources) over the window's
    real bases and padded with its `pad_value`. Index it by position in `windows`, or by a Window
    directly (as RandomWindowSampler yields).
    """

    def __init__(self, reference: Reference, windows: Sequence[Window],
                 tokenizer: KmerTokenizer | ProteinTokenizer, alignments: Alignments | None = None,
                 variants: TruthVariants | None = None, tracks: Tracks | None = None,
                 confident: Iterable[Interval] | None = None):
        sizes = {len(w) for w in windows}
        if len(sizes) > 1:
            raise UsageError(f"windows of one dataset must share one size to batch, got {sorted(sizes)[:5]}")
        if confident is not None and variants is None:
            raise UsageError("confident regions only apply to truth variants; give variants too")
        if confident is not None:
            variants = variants.scored_in(confident)
        self.reference, self.windows, self.tokenizer = reference, list(windows), tokenizer
        # item key -> source; a source of several labels (a structured dtype) gives one item per field
        self.sources: dict[str, PerBaseSource] = {
            key: source for key, source in (("evidence", alignments), ("truth", variants), ("tracks", tracks))
            if source is not None}

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, item: int | Window) -> dict:
        w = item if isinstance(item, Window) else self.windows[item]
        size, real = len(w), w.to_interval()
        seq = self.reference.per_base(real)
        try:
            codes = self.tokenizer.codes(seq)
        except InputError as exc:
            raise FastaError(f"{self.reference.path}: window {real.contig}:{real.start + 1:,}-{real.end:,}: "
                             f"{exc}") from None
        ids = self.tokenizer.encode_codes(codes)
        n_tokens = self.tokenizer.n_tokens(size)
        tokens = np.full(n_tokens, self.tokenizer.pad_id, dtype=np.int64)
        tokens[:ids.size] = ids
        arrays = {"tokens": tokens, "token_mask": np.arange(n_tokens) < ids.size, "valid": w.valid_mask(),
                  "bases": _pad(codes.astype(np.int64), size, self.tokenizer.pad_code),
                  "soft_mask": _pad(soft_mask(seq), size, False)}
        for key, source in self.sources.items():
            values = _pad(source.per_base(real), size, source.pad_value)
            fields = values.dtype.names
            arrays |= {name: np.ascontiguousarray(values[name]) for name in fields} if fields else {key: values}
        tensors = {key: torch.from_numpy(value) for key, value in arrays.items()}
        return tensors | {"contig": w.contig, "start": w.start, "n_valid": w.n_valid}


def _pad(values: np.ndarray, size: int, fill) -> np.ndarray:
    """values [n, ...] -> [size, ...], the tail filled with `fill`."""
    out = np.full((size, *values.shape[1:]), fill, dtype=values.dtype)
    out[:len(values)] = values
    return out


class SequenceDataset(Dataset):
    """One item per sequence: tokens int64 [T], bases int64 [n] (letter codes), soft_mask bool [n], plus
    label int64 [] or residue_labels int64 [n].

    Everything is tokenised up front, so a bad character fails before training starts, naming the
    file and the record. `collate` pads a batch to its longest sequence.
    """

    def __init__(self, seqs: LabelledSequences, tokenizer: KmerTokenizer | ProteinTokenizer,
                 classes: list[str], window: int):
        self.tokenizer, self.per_residue = tokenizer, seqs.per_residue
        index = {name: i for i, name in enumerate(classes)}
        self.tokens: list[np.ndarray] = []
        self.codes: list[np.ndarray] = []
        self.soft_masks: list[np.ndarray] = []
        self.targets: list[np.ndarray] = []
        cut = 0
        for i, seq in enumerate(seqs.sequences):
            if len(seq) > window:
                seq, cut = seq[:window], cut + 1
            try:
                codes = tokenizer.codes(seq)
            except InputError as e:
                raise InputError(f"{seqs.path}: {seqs.where[i]}: {e} "
                                 f"({tokenizer.kind} sequences)") from None
            self.tokens.append(tokenizer.encode_codes(codes))
            self.codes.append(codes)
            self.soft_masks.append(soft_mask(seq))
            if seqs.per_residue:
                target = np.array([index.get(lab, IGNORE_INDEX) for lab in seqs.labels[i][:len(seq)]], dtype=np.int64)
                if seqs.masks[i] is not None:
                    target[~seqs.masks[i][:len(seq)]] = IGNORE_INDEX
                self.targets.append(target)
            else:
                self.targets.append(np.array(index[seqs.labels[i]], dtype=np.int64))
        if cut:
            log.warning("%s: %d of %d sequences are longer than the window (%d) and were cut to it",
                        seqs.path, cut, len(seqs), window)
        self.lengths = [min(len(s), window) for s in seqs.sequences]

    def __len__(self) -> int:
        return len(self.tokens)

    def __getitem__(self, i: int) -> dict:
        key = "residue_labels" if self.per_residue else "label"
        return {"tokens": torch.from_numpy(self.tokens[i]), key: torch.from_numpy(self.targets[i]),
                "bases": torch.from_numpy(self.codes[i].astype(np.int64)),
                "soft_mask": torch.from_numpy(self.soft_masks[i]), "n_valid": self.lengths[i]}

    def collate(self, items: list[dict]) -> dict:
        """tokens/token_mask [B, T], valid/bases/soft_mask [B, n] (n: the longest's residues; padding N or X),
        label [B] or residue_labels [B, n]. An item's per-residue arrays may run past its n_valid (padding)."""
        T = max(len(it["tokens"]) for it in items)
        n = max(it["n_valid"] for it in items)
        tokens = torch.full((len(items), T), self.tokenizer.pad_id, dtype=torch.int64)
        valid = torch.zeros(len(items), n, dtype=torch.bool)
        bases = torch.full((len(items), n), self.tokenizer.pad_code, dtype=torch.int64)
        masks = torch.zeros(len(items), n, dtype=torch.bool)
        for b, it in enumerate(items):
            m = it["n_valid"]
            tokens[b, :len(it["tokens"])] = it["tokens"]
            valid[b, :m] = True
            bases[b, :m], masks[b, :m] = it["bases"][:m], it["soft_mask"][:m]
        batch = {"tokens": tokens, "token_mask": tokens != self.tokenizer.pad_id, "valid": valid,
                 "bases": bases, "soft_mask": masks}
        if self.per_residue:
            labels = torch.full((len(items), n), IGNORE_INDEX, dtype=torch.int64)
            for b, it in enumerate(items):
                labels[b, :it["n_valid"]] = it["residue_labels"][:it["n_valid"]]
            return batch | {"residue_labels": labels}
        return batch | {"label": torch.stack([it["label"] for it in items])}
