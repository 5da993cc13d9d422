"""benchmarks/quality/: the --budget parser, the allele-fraction caller (against pysam), CB513 reading and Q3."""
from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

import numpy as np
import pysam
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "quality"))
from quality_common import Budget, parse_budget, table
from variant_callers import allele_fraction_calls

REGION = "chr20:10,000,847-10,004,000"


@pytest.mark.parametrize("text, budget", [("300", Budget(steps=300)), ("300steps", Budget(steps=300)),
                                          ("6m", Budget(minutes=6.0)), ("2.5min", Budget(minutes=2.5))])
def test_budget_steps_or_minutes(text, budget):
    assert parse_budget(text) == budget


@pytest.mark.parametrize("text", ["0", "1.5", "5h", "m", ""])
def test_bad_budget(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_budget(text)


def test_table_aligns_text_left_numbers_right():
    text = table([{"name": "a", "x": 0.5}, {"name": "bbb", "x": float("nan")}],
                 [("name", "name", ""), ("x", "x", ".2f")])
    assert text.splitlines() == ["name     x", "----------", "a     0.50", "bbb      -"]


def test_allele_fraction_caller_matches_pysam_pileup(chr20, tmp_path):
    """Every call, and only those, where pysam's pileup gives depth >= 5 and a non-reference base at
    >= 20 % of the depth (counting bases of quality >= 13); GT 1/1 from 80 %."""
    vcf = allele_fraction_calls(REGION, tmp_path / "af.vcf.gz")
    got = {(r.pos, r.ref, r.alts[0], r.samples[0]["GT"]) for r in pysam.VariantFile(str(vcf))}
    expected = set()
    with pysam.AlignmentFile(str(chr20["bam"])) as bam, pysam.FastaFile(str(chr20["fasta"])) as fasta:
        for col in bam.pileup("chr20", 10_000_846, 10_004_000, truncate=True, stepper="nofilter",
                              ignore_overlaps=False, min_base_quality=0, max_depth=100_000):
            reads = [p for p in col.pileups if not p.is_refskip]
            depth = len(reads)
            counts = {b: 0 for b in "ACGT"}
            for p in reads:
                if not p.is_del and p.alignment.query_qualities[p.query_position] >= 13:
                    base = p.alignment.query_sequence[p.query_position]
                    counts[base] = counts.get(base, 0) + 1
            ref = fasta.fetch("chr20", col.reference_pos, col.reference_pos + 1).upper()
            alt = max((b for b in "ACGT" if b != ref), key=lambda b: counts[b])
            fraction = counts[alt] / depth if depth else 0
            if depth >= 5 and fraction >= 0.2:
                expected.add((col.reference_pos + 1, ref, alt, (1, 1) if fraction >= 0.8 else (0, 1)))
    assert got == expected
    assert len(got) > 10  # the region holds real SNVs: the comparison is not vacuous
    assert np.all([pos >= 10_000_847 for pos, *_ in got])


def test_cb513_reading_and_flip_overlap_match_pysam(shared_data, tmp_path):
    """CB513's CSV agrees with the data README's counts; the CB513 sequences shared with FLIP's SET=train
    are those pysam finds by exact match (2), and dropping them removes exactly their residues."""
    from protein_ss_quality import CB513_CSV, FLIP_ZIP, fasta, read_cb513, shared_with

    cb = read_cb513()
    assert len(cb.ids) == 511 and sum(map(len, cb.sequences)) == 144_011
    letters = np.array(list("".join(cb.labels)))
    assert [(letters == c).sum() for c in "CHE"] == [63_084, 49_006, 31_921]  # data README, dssp3
    with zipfile.ZipFile(FLIP_ZIP) as zf:
        zf.extractall(tmp_path)
    flip = tmp_path / "splits"
    with pysam.FastxFile(str(flip / "sampled.fasta")) as fh:
        train_ids = {r.name for r in fh if "SET=train" in r.comment.split()}
    with pysam.FastxFile(str(flip / "sequences.fasta")) as fh:
        train_seqs = {r.sequence for r in fh if r.name in train_ids}
    with pysam.FastxFile(str(CB513_CSV.with_name("CB513.fasta"))) as fh:
        cb_seqs = {r.name: r.sequence for r in fh}
    expected = {name for name, seq in cb_seqs.items() if seq in train_seqs}
    assert len(expected) == 2
    shared = shared_with(cb, fasta(flip / "sequences.fasta"), fasta(flip / "sampled.fasta"))
    assert set(shared) == expected
    kept = cb.drop(set(shared))
    assert len(kept.ids) == 509
    assert sum(map(len, kept.sequences)) == 144_011 - sum(len(cb_seqs[n]) for n in expected)


def test_q3_and_majority_by_hand():
    from protein_ss_quality import CB513, q3

    def yes(n: int) -> np.ndarray:
        return np.ones(n, dtype=bool)

    cb = CB513(["a", "b"], ["MKV", "GSAP"], ["HEC", "CCCH"], [yes(3), np.array([1, 1, 0, 1], dtype=bool)],
               [yes(3), yes(4)])
    classes = ["C", "E", "H"]
    predicted = [np.array([2, 0, 0]), np.array([0, 1, 1, 2])]  # H C C | C E E H
    # resolved: 6 residues (the third of b is not), right: H, C | C, H = 4; majority C: 3 of 6
    assert q3(cb, predicted, classes, "resolved") == (4 / 6, "C", 3 / 6, 6)
    # all 7: right H, C | C, H = 4; C is 4 of 7
    assert q3(cb, predicted, classes, "cb513_mask") == (4 / 7, "C", 4 / 7, 7)
