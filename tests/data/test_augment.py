"""Augmentation against datasets built independently on the other strand (mirrored reads, reference, truth)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import read_factory as rf
from genoformer.data.augment import Augmentation, reverse_complement_item, shift_item
from genoformer.data.datasets import WindowDataset
from genoformer.data.windows import Window
from genoformer.errors import UsageError
from genoformer.io.alignments import EVIDENCE_FEATURES, Alignments
from genoformer.io.fasta import Reference
from genoformer.io.variants import DELETION, INSERTION, SNV, TruthVariants
from genoformer.tokenize import KmerTokenizer, ProteinTokenizer

N, W = 300, 320  # real bases of the window, window size (20 bases of padding)
SEQ = rf.random_sequence(N, seed=3, soft_masked=(100, 130))
PLANTED = [rf.Planted("snv", 60, "A" if SEQ[60] != "A" else "C"), rf.Planted("deletion", 150, length=3),
           rf.Planted("insertion", 220, "GTT")]


def dataset(paths: dict, tokenizer) -> WindowDataset:
    ref = Reference(paths["reference"])
    return WindowDataset(ref, [Window("c", 0, W, N)], tokenizer, alignments=Alignments(paths["bam"], ref),
                         variants=TruthVariants(paths["vcf"], ref))


@pytest.fixture(scope="module")
def strands(tmp_path_factory):
    root = tmp_path_factory.mktemp("strands")
    return (rf.write_sample(root / "forward", SEQ, PLANTED),
            rf.write_sample(root / "reverse", SEQ, PLANTED, reverse=True))


def assert_items_equal(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    for key, value in theirs.items():
        if key == "evidence":
            for i, name in enumerate(EVIDENCE_FEATURES):
                torch.testing.assert_close(ours[key][:, i], value[:, i], rtol=1e-5, atol=1e-5, msg=name)
        elif isinstance(value, torch.Tensor):
            assert torch.equal(ours[key], value), key
        elif key != "start":
            assert ours[key] == value, key


@pytest.mark.parametrize("k,stride", [(1, 1), (3, 2), (6, 6), (7, 3)])
def test_reverse_complement_equals_the_mirrored_sample(strands, k, stride):
    tok = KmerTokenizer(k, stride)
    forward, reverse = (dataset(paths, tok)[0] for paths in strands)
    # the planted events are where the reads and the truth put them, on either strand
    ev = forward["evidence"]
    assert forward["genotype"][60] == 1 and forward["variant_type"][60] == SNV
    assert forward["variant_type"][151:154].tolist() == [DELETION] * 3 and forward["variant_type"][220] == INSERTION
    assert ev[150, EVIDENCE_FEATURES.index("deletion_starts")] > 0
    assert ev[220, EVIDENCE_FEATURES.index("insertions")] > 0
    assert reverse["variant_type"][N - 2 - 220] == INSERTION and reverse["variant_type"][N - 1 - 60] == SNV
    assert (forward["soft_mask"][100:130]).all() and not forward["valid"][N:].any()
    assert_items_equal(reverse_complement_item(forward, tok), reverse)
    assert_items_equal(reverse_complement_item(reverse, tok), forward)


def test_reverse_complement_twice_is_the_identity(strands, chr20):
    tok = KmerTokenizer(4, 3)
    item = dataset(strands[0], tok)[0]
    assert_items_equal(reverse_complement_item(reverse_complement_item(item, tok), tok), item)
    ref = Reference(chr20["fasta"])
    # a real window (reads with errors, clips, indels), padded at its end
    real = WindowDataset(ref, [Window("chr20", 10_004_700, 10_006_700, 1_900)], tok,
                         alignments=Alignments(chr20["bam"], ref))[0]
    ev = real["evidence"].numpy()
    assert ev[1_899, EVIDENCE_FEATURES.index("insertions")] == 0  # no insertion after the last base (see augment.py)
    assert ev[:, EVIDENCE_FEATURES.index("deletion_starts")].sum() > 0
    assert_items_equal(reverse_complement_item(reverse_complement_item(real, tok), tok), real)


@pytest.mark.parametrize("shift", [1, 7, 151])
def test_shift_equals_the_window_that_starts_later(strands, shift):
    tok = KmerTokenizer(3, 2)
    ds = dataset(strands[0], tok)
    later = ds[Window("c", shift, W + shift, N - shift)]
    shifted = shift_item(ds[0], shift, tok)
    assert shifted["start"] == shift and shifted["n_valid"] == N - shift
    assert_items_equal(shifted, later)


def test_augmentation_draws_and_refuses_protein(strands):
    tok = KmerTokenizer(3)
    item = dataset(strands[0], tok)[0]
    rng = np.random.default_rng(0)
    drawn = [Augmentation(tok, rc=True, shift=5)(item, rng) for _ in range(40)]
    assert {d["n_valid"] for d in drawn} == set(range(N - 5, N + 1))
    flipped = sum(int(d["bases"][0]) != int(item["bases"][N - d["n_valid"]]) for d in drawn)
    assert 5 < flipped < 35  # about half reverse-complemented
    assert not Augmentation(tok).active
    with pytest.raises(UsageError, match="protein"):
        Augmentation(ProteinTokenizer(1), rc=True)
    with pytest.raises(UsageError, match="shift"):
        Augmentation(tok, shift=-1)
