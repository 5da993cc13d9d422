"""benchmarks/quality/: the --budget parser and the allele-fraction caller, checked against pysam."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pysam
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "quality"))
from quality_common import Budget, parse_budget, table
from variant_quality import allele_fraction_calls

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
