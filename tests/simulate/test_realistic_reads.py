"""What makes simulated reads look like real ones: reads near indels align as a local aligner would
(simulate/reads.py `_local`), half the indels change the copies of a tandem repeat (simulate/genome.py), a
diverged paralog's reads mismap at low MAPQ, and strand-specific errors: hand-made reads, and the simulated
example checked with pysam and bcftools."""
from __future__ import annotations

import numpy as np
import pysam
import pytest
from pysam import bcftools

from genoformer.simulate.genome import REPEAT_LENGTH, simulate
from genoformer.simulate.reads import PARALOG_MAPQ, PARALOG_SHARE, _cigar, _local

REF = np.frombuffer(b"ACGTACGGTCATTTGACCATGCAAGTCCGATAGCTAGGCTAACGTAGCTAGGGATCCAGT", np.uint8)


def insertion_read(after: int, inserted: bytes, start: int, length: int):
    """(reference position of each base, bases) of a read of the haplotype with `inserted` after base `after`."""
    hap = np.concatenate([REF[:after + 1], np.frombuffer(inserted, np.uint8), REF[after + 1:]])
    ref_pos = np.concatenate([np.arange(after + 1), np.full(len(inserted), -1), np.arange(after + 1, REF.size)])
    return ref_pos[start:start + length], hap[start:start + length]


def deletion_read(first: int, n: int, start: int, length: int):
    ref_pos = np.concatenate([np.arange(first), np.arange(first + n, REF.size)])
    hap = np.concatenate([REF[:first], REF[first + n:]])
    return ref_pos[start:start + length], hap[start:start + length]


@pytest.mark.parametrize("read, expected", [
    (insertion_read(20, b"GG", 5, 30), ("16M2I12M", 5, 33)),  # 12 bases past the insertion: kept
    (insertion_read(20, b"GG", 10, 14), ("11M3S", 10, 21)),  # 1 base past it: aligned straight on, clipped
    (insertion_read(20, b"GG", 19, 30), ("3S27M", 20, 47)),  # 2 bases before it: clipped on the left
    (insertion_read(20, b"GG", 17, 30), ("4M2I24M", 17, 45)),  # 4 before: a tie, the true alignment
    (deletion_read(30, 3, 10, 30), ("20M3D10M", 10, 43)),
    (deletion_read(30, 3, 10, 22), ("20M2S", 10, 30)),
    (deletion_read(30, 3, 28, 25), ("2S23M", 33, 56)),
])
def test_a_read_ending_near_an_indel_aligns_as_a_local_aligner_would(read, expected):
    ref_pos, bases = read
    assert _cigar(_local(ref_pos, bases, REF)) == expected


def test_inside_a_repeat_the_read_aligns_without_the_indel_as_far_as_it_matches():
    global REF
    saved = REF
    try:  # an A after a run of eight A's: aligned straight on, a read matches on 8 A's, then not
        REF = np.frombuffer(b"CGTGCATCG" + b"A" * 8 + b"GTCCTAGCATGCAGT", np.uint8)
        ref_pos, bases = insertion_read(8, b"A", 0, 19)  # ends 1 base past the run: clipped
        assert _cigar(ref_pos) == ("9M1I9M", 0, 18)
        assert _cigar(_local(ref_pos, bases, REF)) == ("17M2S", 0, 17)
        ref_pos, bases = insertion_read(8, b"A", 0, 21)  # 3 bases past it pay for the gap
        assert _cigar(_local(ref_pos, bases, REF)) == ("9M1I11M", 0, 20)
    finally:
        REF = saved


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("sim") / "ex", seed=5, contigs=(("chrA", 400_000),), coverage=20,
                    variant_rate=1 / 200, indel_fraction=0.5)


def repeat_unit(ref: str, alt: str, after: str) -> str | None:
    """The unit of the tandem repeat (at least REPEAT_LENGTH[0] bases) an indel changes the copies of, or None."""
    changed = alt[1:] if len(alt) > len(ref) else ref[1:]
    for u in range(1, 5):
        unit = changed[:u]
        if len(changed) % u == 0 and unit * (len(changed) // u) == changed and \
                after.startswith(unit * (REPEAT_LENGTH[0] // u)):
            return unit
    return None


def test_half_the_indels_change_a_repeat_and_the_truth_is_normalised(example):
    with pysam.VariantFile(str(example.truth_vcf)) as vcf, pysam.FastaFile(str(example.reference)) as fa:
        indels = [(r.start, r.ref, r.alts[0], fa.fetch(r.contig, r.start + 1, r.start + 40).upper())
                  for r in vcf if len(r.ref) != len(r.alts[0])]
    in_repeat = [repeat_unit(ref, alt, after) is not None for _, ref, alt, after in indels]
    assert len(indels) > 150 and 0.35 < np.mean(in_repeat) < 0.65
    normed = bcftools.norm("-f", str(example.reference), "--check-ref", "e", str(example.truth_vcf))
    body = [line.split("\t")[:5] for line in normed.splitlines() if not line.startswith("#")]
    with pysam.VariantFile(str(example.truth_vcf)) as vcf:
        assert body == [[r.contig, str(r.pos), ".", r.ref, r.alts[0]] for r in vcf]


def test_a_het_insertion_in_a_repeat_shows_in_the_reads_that_span_it_only(example):
    spanning, shares = [], []
    with pysam.VariantFile(str(example.truth_vcf)) as vcf, pysam.FastaFile(str(example.reference)) as fa, \
            pysam.AlignmentFile(str(example.reads)) as bam:
        for r in vcf:
            alt = r.alts[0]
            after = fa.fetch(r.contig, r.start + 1, r.start + 40).upper()
            unit = repeat_unit(r.ref, alt, after)
            if len(alt) <= len(r.ref) or sum(r.samples[0]["GT"]) != 1 or unit is None:
                continue
            run = next(j for j in range(len(unit), len(after)) if after[j] != after[j - len(unit)])  # its length
            shows = []
            for column in bam.pileup(r.contig, r.start, r.start + 1, truncate=True, min_base_quality=0):
                for read in column.pileups:
                    aln = read.alignment
                    # a read whose aligned part ends before the repeat is over cannot show the insertion
                    spans = aln.reference_start < r.start and aln.reference_end > r.start + 1 + run
                    shows.append(read.indel == len(alt) - 1)
                    # reads with several indels, or ending inside another insertion, keep their true alignment
                    if sum(op in (1, 2) for op, _ in aln.cigartuples) == 1 and aln.cigartuples[-1][0] != 4:
                        spanning.append((spans, shows[-1]))
            shares.append(np.mean(shows))
    assert len(shares) > 15
    assert not any(show and not spans for spans, show in spanning)  # only spanning reads show it
    assert np.mean(shares) < 0.47  # below the half of all reads that true alignments gave


def test_a_paralogs_reads_map_at_low_mapq_and_show_its_differences_at_a_minority_of_the_reads(example):
    with pysam.AlignmentFile(str(example.reads)) as bam, pysam.FastaFile(str(example.reference)) as fa:
        genome = fa.fetch("chrA").upper()
        paralog = [r for r in bam.fetch("chrA") if "_paralog_" in r.query_name]
        covered = np.zeros(len(genome), bool)
        differs: dict = {}
        for r in paralog:
            assert PARALOG_MAPQ[0] <= r.mapping_quality <= PARALOG_MAPQ[1] and r.cigarstring == "101M"
            covered[r.reference_start:r.reference_end] = True
            for q, p in r.get_aligned_pairs(matches_only=True):
                if r.query_sequence[q] != genome[p] and r.query_qualities[q] >= 30:
                    differs[(p, r.query_sequence[q])] = differs.get((p, r.query_sequence[q]), 0) + 1
        assert 0.5 * PARALOG_SHARE < covered.mean() < 1.5 * PARALOG_SHARE
        fixed = [(p, b) for (p, b), n in differs.items() if n >= 4]  # the paralog's own differences
        assert len(fixed) > 20
        shares, mapqs = [], []
        for p, b in fixed[:30]:
            for column in bam.pileup("chrA", p, p + 1, truncate=True, min_base_quality=0):
                reads = [(x.alignment.query_sequence[x.query_position], x.alignment.mapping_quality)
                         for x in column.pileups if x.query_position is not None]
            alt = [mapq for base, mapq in reads if base == b]
            shares.append(len(alt) / len(reads))
            mapqs.append(np.mean(alt))
    assert 0.1 < np.median(shares) < 0.4 and max(mapqs) <= PARALOG_MAPQ[1]


def test_strand_specific_errors_pile_up_on_one_strand(example):
    with pysam.AlignmentFile(str(example.reads)) as bam, pysam.FastaFile(str(example.reference)) as fa, \
            pysam.VariantFile(str(example.truth_vcf)) as vcf:
        genome = fa.fetch("chrA").upper()
        variants = {r.start + i for r in vcf for i in range(len(r.ref))}
        wrong: dict = {}
        for r in bam.fetch("chrA"):
            if "_paralog_" in r.query_name:
                continue
            for q, p in r.get_aligned_pairs(matches_only=True):
                if r.query_sequence[q] != genome[p] and p not in variants:
                    wrong.setdefault((p, r.query_sequence[q]), []).append(r.is_reverse)
    piles = [strands for strands in wrong.values() if len(strands) >= 4]
    assert len(piles) > 10
    assert np.mean([len(set(strands)) == 1 for strands in piles]) > 0.9  # all on one strand
