"""Training-time augmentation of dataset items: reverse complement and random shifts (training data path only).

An item is a WindowDataset or SequenceDataset item: per-base arrays over W bases whose first
`n_valid` are real (the rest padding), and tokens re-encoded here from the letter codes (`bases`),
so they are exactly what the datasets would give for the transformed sequence.

Reverse complement (DNA) maps an item to what the same reads, reference and truth give on the
other strand. Over the real bases [0, n):
- bases complemented and reversed, tokens re-encoded; soft mask, tracks, per-residue labels,
  and every per-base evidence column reversed;
- evidence: A<->T and C<->G counts swap; forward fractions become 1 - fraction where their
  reads exist (forward_fraction where depth > 0, ref_/alt_forward_fraction where the ref/alt
  fraction is > 0); an insertion anchored after base b (insertions, mean_insertion_length) is
  anchored after base n-2-b, and a deletion of length L anchored at b (deletion_starts,
  mean_deletion_length; L rounded from the mean) at n-2-b-L: the base before it on the other strand;
- labels: an insertion's label sits on its anchor, so INSERTION-typed labels move from the
  mirrored anchor to the base before it (a complex insertion that replaces bases, rare, moves
  one base too far); everything else is reversed.
Events anchored outside the window are lost on either strand (an insertion after the last real
base has no anchor on the reverse strand), so reversing twice is the identity except there.

Shift by d drops the first d bases (as if the window started d bases later) and pads the end.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genoformer.data.datasets import IGNORE_INDEX
from genoformer.errors import UsageError
from genoformer.io.evidence import Evidence
from genoformer.io.variants import INSERTION
from genoformer.tokenize import KmerTokenizer, ProteinTokenizer

_COMPLEMENT_CODE = np.array([3, 2, 1, 0, 4])  # A C G T N -> T G C A N (KmerTokenizer.alphabet order)
_SWAPS = ((Evidence.A, Evidence.T), (Evidence.C, Evidence.G))
# (fraction column, where its reads exist)
_STRAND = ((Evidence.forward_fraction, Evidence.depth), (Evidence.ref_forward_fraction, Evidence.ref_fraction),
           (Evidence.alt_forward_fraction, Evidence.alt_fraction))
_AFTER_BASE = (Evidence.insertions, Evidence.mean_insertion_length)


def _fills(tokenizer) -> dict:
    """Per-base item keys and the value that pads them."""
    return {"valid": False, "bases": tokenizer.pad_code, "soft_mask": False, "evidence": 0,
            "genotype": IGNORE_INDEX, "variant_type": IGNORE_INDEX, "tracks": 0, "residue_labels": IGNORE_INDEX}


def reverse_complement_evidence(evidence: np.ndarray) -> np.ndarray:
    """float32 [n, F] evidence of n real bases (the first F columns of EVIDENCE_FEATURES) on the other strand."""
    n, n_features = evidence.shape
    has = set(range(n_features))
    out = evidence[::-1].copy()
    for a, b in _SWAPS:
        if a in has and b in has:
            out[:, [a, b]] = out[:, [b, a]]
    for fraction, exists in _STRAND:
        if fraction in has and exists in has:
            out[:, fraction] = np.where(out[:, exists] > 0, 1 - out[:, fraction], 0)
    for column in _AFTER_BASE:
        if column in has:
            out[:, column] = np.concatenate((out[1:, column], [0]))
    if Evidence.mean_deletion_length in has:
        count, length = evidence[:, Evidence.deletion_starts], evidence[:, Evidence.mean_deletion_length]
        anchor = np.flatnonzero(count)
        target = n - 2 - anchor - np.rint(length[anchor]).astype(np.int64)
        keep = target >= 0
        target, anchor = target[keep], anchor[keep]
        moved = np.bincount(target, count[anchor], minlength=n)
        total = np.bincount(target, count[anchor] * length[anchor], minlength=n)
        out[:, Evidence.deletion_starts] = moved
        out[:, Evidence.mean_deletion_length] = np.divide(total, moved, out=np.zeros(n), where=moved > 0)
    return out


def _reverse_labels(genotype: np.ndarray, variant_type: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """genotype, variant_type [n] (IGNORE_INDEX where unscored) on the other strand (see the module docstring)."""
    g, t = genotype[::-1].copy(), variant_type[::-1].copy()
    mirrored = np.flatnonzero(t == INSERTION)
    carried = g[mirrored]
    g[mirrored], t[mirrored] = 0, 0
    target = mirrored - 1
    keep = (target >= 0) & (t[np.maximum(target, 0)] != IGNORE_INDEX)  # an unscored base stays unscored
    np.maximum.at(g, target[keep], carried[keep])
    np.maximum.at(t, target[keep], INSERTION)
    return g, t


def _arrays(item: dict, tokenizer) -> dict[str, np.ndarray]:
    return {key: item[key].numpy().copy() for key in _fills(tokenizer) if key in item}


def _with_arrays(item: dict, arrays: dict[str, np.ndarray], tokenizer, n_valid: int) -> dict:
    """The item with its per-base arrays replaced and its tokens re-encoded from `bases`."""
    ids = tokenizer.encode_codes(arrays["bases"][:n_valid])
    tokens = np.full(len(item["tokens"]), tokenizer.pad_id, dtype=np.int64)
    tokens[:ids.size] = ids
    out = dict(item) | {key: torch.from_numpy(value) for key, value in arrays.items()}
    out |= {"tokens": torch.from_numpy(tokens), "n_valid": n_valid}
    if "token_mask" in item:
        out["token_mask"] = torch.from_numpy(np.arange(len(tokens)) < ids.size)
    return out


def reverse_complement_item(item: dict, tokenizer: KmerTokenizer) -> dict:
    """The item on the other strand (see the module docstring); padding stays at the end."""
    n = int(item["n_valid"])
    arrays = _arrays(item, tokenizer)
    for key, value in arrays.items():
        if key == "bases":
            value[:n] = _COMPLEMENT_CODE[value[:n][::-1]]
        elif key == "evidence":
            value[:n] = reverse_complement_evidence(value[:n])
        elif key not in ("genotype", "variant_type"):
            value[:n] = value[:n][::-1].copy()
    if "genotype" in arrays:
        arrays["genotype"][:n], arrays["variant_type"][:n] = _reverse_labels(arrays["genotype"][:n],
                                                                             arrays["variant_type"][:n])
    return _with_arrays(item, arrays, tokenizer, n)


def shift_item(item: dict, shift: int, tokenizer: KmerTokenizer | ProteinTokenizer) -> dict:
    """The item without its first `shift` bases (at most n_valid - 1), padded at the end."""
    n = int(item["n_valid"])
    shift = min(shift, n - 1)
    if shift <= 0:
        return item
    fills = _fills(tokenizer)
    arrays = _arrays(item, tokenizer)
    for key, value in arrays.items():
        value[:-shift] = value[shift:].copy()
        value[-shift:] = fills[key]
    out = _with_arrays(item, arrays, tokenizer, n - shift)
    return out | ({"start": item["start"] + shift} if "start" in item else {})


@dataclass(frozen=True)
class Augmentation:
    """Draws per item: a shift of 0..`shift` bases, then the reverse strand with probability 1/2 when `rc`."""
    tokenizer: KmerTokenizer | ProteinTokenizer
    rc: bool = False
    shift: int = 0

    def __post_init__(self) -> None:
        if self.rc and not isinstance(self.tokenizer, KmerTokenizer):
            raise UsageError("rc-augment reverse-complements DNA; these are protein sequences")
        if isinstance(self.shift, bool) or not isinstance(self.shift, int) or self.shift < 0:
            raise UsageError(f"shift-augment must be a non-negative number of bases, got {self.shift!r}")

    @property
    def active(self) -> bool:
        return self.rc or self.shift > 0

    def __call__(self, item: dict, rng: np.random.Generator) -> dict:
        if self.shift:
            item = shift_item(item, int(rng.integers(0, self.shift + 1)), self.tokenizer)
        if self.rc and rng.random() < 0.5:
            item = reverse_complement_item(item, self.tokenizer)
        return item

