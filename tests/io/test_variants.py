"""Truth labels against a direct pysam.VariantFile reading of the same records."""
from __future__ import annotations

import shutil
from collections import Counter
from typing import NamedTuple

import numpy as np
import pysam
import pytest

from genoformer.coords import read_bed
from genoformer.errors import RegionError, VariantError
from genoformer.io.fasta import Reference
from genoformer.io.variants import GENOTYPES, VARIANT_TYPES, TruthVariants, allele_spans

CHR20_LEN = 63_025_520
START, END = 9_999_999, 10_100_000  # chr20:10,000,000-10,100,000


class Iv(NamedTuple):
    contig: str
    start: int
    end: int


def read_bed_plain(path) -> list[Iv]:
    with open(path) as fh:
        return [Iv(f[0], int(f[1]), int(f[2])) for f in (line.split("\t") for line in fh if line.strip())]


@pytest.fixture(scope="module")
def truth(chr20):
    return TruthVariants(chr20["vcf"], {"chr20": CHR20_LEN})


@pytest.fixture(scope="module")
def pysam_records(chr20):
    with pysam.VariantFile(str(chr20["vcf"])) as vcf:
        return [(r.start, r.stop, r.ref, r.alts, r.samples[0]["GT"]) for r in vcf]


def test_records_and_genotypes_match_pysam(truth, pysam_records):
    ours = list(truth.records("chr20", START, END))
    assert len(ours) == len(pysam_records) == 221
    assert Counter(v.gt for v in ours) == Counter(r[4] for r in pysam_records)
    assert Counter(v.gt for v in ours) == {(0, 1): 124, (1, 1): 92, (1, 0): 4, (1, 2): 1}
    assert sum(len(r[2]) == 1 and all(len(a) == 1 for a in r[3]) for r in pysam_records) == 186
    assert Counter(GENOTYPES[v.genotype] for v in ours) == {"het": 128, "hom_alt": 93}


def expected_labels(records, start, end):
    """Place each record by the simple shapes this truth set has: SNV, left-anchored deletion or insertion."""
    gt, vt = np.zeros(end - start, np.int8), np.zeros(end - start, np.int8)
    for rstart, rstop, ref, alts, call in records:
        g = 1 if 0 in call else 2
        for alt in {alts[a - 1] for a in call if a}:
            if len(ref) == len(alt) == 1:
                s, e, t = rstart, rstart + 1, "snv"
            elif len(alt) == 1 and ref[0] == alt:
                s, e, t = rstart + 1, rstop, "deletion"
            else:
                assert len(ref) == 1 and alt[0] == ref, (rstart, ref, alt)
                s, e, t = rstart, rstart + 1, "insertion"
            gt[s - start:e - start] = np.maximum(gt[s - start:e - start], g)
            vt[s - start:e - start] = np.maximum(vt[s - start:e - start], VARIANT_TYPES.index(t))
    return gt, vt


def test_labels_mark_exactly_the_variant_bases(truth, pysam_records):
    labels = truth.labels("chr20", START, END)
    gt, vt = expected_labels(pysam_records, START, END)
    np.testing.assert_array_equal(labels.genotype, gt)
    np.testing.assert_array_equal(labels.variant_type, vt)
    assert labels.mask.all() and labels.genotype.dtype == np.int8
    # the one multi-allelic 1|2 (A -> AA, AG) is two inserted alleles after the same base: hom_alt there
    assert labels.genotype[10_004_222 - START] == 2 and labels.variant_type[10_004_222 - START] == 2
    assert labels.counts()["snv"] == 186


def test_confident_regions_mask(chr20, truth, pysam_records):
    bed = read_bed_plain(chr20["bed"])
    assert len(bed) == 11 and sum(iv.end - iv.start for iv in bed) == 8_999
    labels = truth.labels("chr20", START, END, confident=bed)
    assert labels.mask.sum() == 8_999
    inside = np.zeros(END - START, bool)
    for iv in bed:
        inside[iv.start - START:iv.end - START] = True
    np.testing.assert_array_equal(labels.mask, inside)
    in_bed = [r for r in pysam_records if any(iv.start <= r[0] < iv.end for iv in bed)]
    assert len(in_bed) == 49
    gt, vt = expected_labels(pysam_records, START, END)
    counts = labels.counts()
    assert counts["scored"] == 8_999
    assert counts["het"] == int((gt[inside] == 1).sum()) and counts["deletion"] == int((vt[inside] == 3).sum())
    sub = Iv("chr20", 10_000_000, 10_002_000)
    assert labels.counts(sub)["scored"] == int(inside[10_000_000 - START:10_002_000 - START].sum())
    assert labels.counts(Iv("chr1", 0, 10**9))["scored"] == 0


def test_with_reference_and_read_bed(chr20, truth, shared_data):
    ref = Reference(chr20["fasta"])
    labels = TruthVariants(chr20["vcf"], ref).labels("chr20", START, END, confident=read_bed(chr20["bed"], ref.contigs))
    expected = truth.labels("chr20", START, END, confident=read_bed_plain(chr20["bed"]))
    for field in ("genotype", "variant_type", "mask"):
        np.testing.assert_array_equal(getattr(labels, field), getattr(expected, field))
    other = Reference(shared_data / "sarscov2_mt192765" / "genome" / "genome.fasta")
    with pytest.raises(VariantError, match="another reference") as err:
        TruthVariants(chr20["vcf"], other)
    assert str(chr20["vcf"]) in str(err.value) and str(other.path) in str(err.value)


def test_vcf_on_another_reference(chr20):
    with pytest.raises(VariantError, match="another reference.*no shared contig names") as err:
        TruthVariants(chr20["vcf"], {"20": CHR20_LEN})
    assert str(chr20["vcf"]) in str(err.value) and err.value.exit_code == 3
    with pytest.raises(VariantError, match=r"chr20 \(63,025,519 bp in the reference, 63,025,520 in the VCF\)"):
        TruthVariants(chr20["vcf"], {"chr20": CHR20_LEN - 1})


def test_regions(truth):
    assert not truth.labels("chr20", 0, 1000).genotype.any()
    with pytest.raises(RegionError, match="'chr1' not found"):
        truth.labels("chr1", 0, 10)
    with pytest.raises(RegionError, match="past the end"):
        truth.labels("chr20", 0, CHR20_LEN + 1)


def test_file_errors(chr20, tmp_path):
    unindexed = tmp_path / "truth.vcf.gz"
    shutil.copyfile(chr20["vcf"], unindexed)
    with pytest.raises(VariantError, match="no index") as err:
        TruthVariants(unindexed)
    assert "bcftools index" in err.value.hint
    for path in (chr20["bam"], chr20["bed"], tmp_path / "missing.vcf.gz"):
        with pytest.raises(VariantError, match="not a VCF|no such file") as err:
            TruthVariants(path)
        assert str(path) in str(err.value)


@pytest.mark.parametrize("ref,alt,spans", [
    ("C", "T", [(100, 101, "snv")]),
    ("CAT", "CGA", [(101, 102, "snv"), (102, 103, "snv")]),   # MNP: each changed base
    ("TAAAC", "T", [(101, 105, "deletion")]),
    ("A", "ATTAG", [(100, 101, "insertion")]),
    ("AT", "GCC", [(100, 102, "insertion")]),                 # complex: replaced bases
    ("GTCA", "GA", [(101, 103, "deletion")]),                 # shared prefix and suffix trimmed
    ("A", "<DEL>", []), ("A", "*", []), ("a", "A", []),
])
def test_allele_spans(ref, alt, spans):
    assert allele_spans(100, ref, alt) == [(s, e, VARIANT_TYPES.index(t)) for s, e, t in spans]


VCF_TEXT = """##fileformat=VCFv4.2
##FILTER=<ID=PASS,Description="All filters passed">
##FILTER=<ID=LowQual,Description="low">
##contig=<ID=c1,length=100>
##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">
#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\tS2
c1\t5\t.\tA\tG\t.\tPASS\t.\tGT\t0/1\t1/1
c1\t10\t.\tC\tT\t.\tLowQual\t.\tGT\t1/1\t0/0
c1\t20\t.\tGAT\tG\t.\t.\t.\tGT\t./.\t0/1
c1\t30\t.\tT\tC\t.\tPASS\t.\tGT\t1\t0
c1\t40\t.\tA\tAC,G\t.\tPASS\t.\tGT\t0/2\t1/2
"""


@pytest.fixture
def two_sample_vcf(tmp_path):
    path = tmp_path / "two.vcf"
    path.write_text(VCF_TEXT)
    return pysam.tabix_index(str(path), preset="vcf", force=True)


def test_filters_missing_calls_and_samples(two_sample_vcf):
    with pytest.raises(VariantError, match="2 samples"):
        TruthVariants(two_sample_vcf)
    with pytest.raises(VariantError, match="no sample 'S3'"):
        TruthVariants(two_sample_vcf, sample="S3")
    s1 = TruthVariants(two_sample_vcf, {"c1": 100}, sample="S1").labels("c1", 0, 100)
    assert np.flatnonzero(s1.genotype).tolist() == [4, 29, 39]
    assert s1.genotype[[4, 29, 39]].tolist() == [1, 2, 1]          # 0/1, haploid 1, 0/2
    assert s1.variant_type[[4, 29, 39]].tolist() == [1, 1, 1]      # allele 2 of A -> AC,G is the SNV
    assert np.flatnonzero(~s1.mask).tolist() == [9, 19, 20, 21]    # LowQual record; ./. over its REF span
    s2 = TruthVariants(two_sample_vcf, sample="S2").labels("c1", 0, 100)
    assert np.flatnonzero(~s2.mask).tolist() == [9]               # a failed FILTER masks whatever the GT
    assert s2.genotype[[4, 20, 21, 39]].tolist() == [2, 1, 1, 2]
    assert s2.variant_type[39] == 2                                # 1/2: insertion beats SNV on the base


def test_pickled_truth_reads_the_same(truth):
    import pickle
    clone = pickle.loads(pickle.dumps(truth))
    np.testing.assert_array_equal(clone.labels("chr20", START, END).genotype, truth.labels("chr20", START, END).genotype)


def test_malformed_record_names_the_file(tmp_path):
    path = tmp_path / "bad.vcf"
    path.write_text(VCF_TEXT + "c1\t50\t.\tA\tG\t.\tPASS\t.\tGT\t0/1\tx/y\n")
    indexed = pysam.tabix_index(str(path), preset="vcf", force=True)
    with pytest.raises(VariantError, match=r"cannot read records in c1:1-100") as err:
        TruthVariants(indexed, sample="S1").labels("c1", 0, 100)
    assert indexed in str(err.value)


def _vcf_with(tmp_path, name: str, records: list[tuple[str, int, str, str, str]], length: int = CHR20_LEN) -> str:
    """An indexed one-sample VCF on chr20 with (contig, 1-based pos, REF, ALT, GT) records."""
    lines = ["##fileformat=VCFv4.2", f"##contig=<ID=chr20,length={length}>",
             '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
             "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1"]
    lines += [f"{c}\t{pos}\t.\t{ref}\t{alt}\t.\tPASS\t.\tGT\t{gt}" for c, pos, ref, alt, gt in records]
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n")
    return pysam.tabix_index(str(path), preset="vcf", force=True)


def test_ref_bases_are_checked_against_the_reference(chr20, tmp_path, monkeypatch):
    """GIAB's REF bases all match hg19 (pysam's fetch is the truth); one changed REF names the file,
    the record and both bases, whether among the first records (checked at once) or read later."""
    ref = Reference(chr20["fasta"])
    TruthVariants(chr20["vcf"], ref).labels("chr20", START, END)  # every record read: no complaint
    with pysam.FastaFile(str(chr20["fasta"])) as fa:
        base = fa.fetch("chr20", 10_000_099, 10_000_100).upper()
    wrong = "ACGT"[("ACGT".index(base) + 1) % 4]
    bad = _vcf_with(tmp_path, "bad.vcf", [("chr20", 10_000_100, wrong, base, "0/1")])
    with pytest.raises(VariantError, match=rf"bad\.vcf.*: REF {wrong} at chr20:10000100 does not match .*\({base}\)"):
        TruthVariants(bad, ref)
    truth = TruthVariants(bad, {"chr20": CHR20_LEN})  # lengths only: nothing to compare the bases with
    assert truth.labels("chr20", START, END).genotype.any()
    with pysam.FastaFile(str(chr20["fasta"])) as fa:
        good = [("chr20", p, fa.fetch("chr20", p - 1, p).upper(), "N", "0/1") for p in range(10_000_001, 10_000_011)]
        actual = fa.fetch("chr20", 10_049_999, 10_050_001).upper()
    shifted = "".join("ACGT"[("ACGT".index(b) + 1) % 4] for b in actual)
    late = _vcf_with(tmp_path, "late.vcf", good + [("chr20", 10_050_000, shifted, shifted[0], "1/1")])
    monkeypatch.setattr("genoformer.io.variants.REF_CHECKS", 10)  # the bad record is past those checked up front
    truth = TruthVariants(late, ref)
    truth.labels("chr20", START, 10_040_000)  # the bad record is not read: fine
    with pytest.raises(VariantError, match=rf"REF {shifted} at chr20:10050000 does not match .*\({actual}\)"):
        truth.labels("chr20", 10_040_000, END)


def test_gt_naming_a_missing_alt_is_an_error(two_sample_vcf, tmp_path):
    """htslib reads 0/3 with one ALT as 0/. without a word; a missing allele (.) stays allowed."""
    path = tmp_path / "gt.vcf"
    path.write_text(VCF_TEXT + "c1\t50\t.\tA\tG\t.\tPASS\t.\tGT\t0/3\t./.\n")
    indexed = pysam.tabix_index(str(path), preset="vcf", force=True)
    with pytest.raises(VariantError, match=r"gt\.vcf\.gz: record c1:50: GT 0/3 names allele 3 but the record has 1 "
                                           r"ALT allele \(G\)"):
        TruthVariants(indexed, sample="S1").labels("c1", 0, 100)
    labels = TruthVariants(indexed, sample="S2").labels("c1", 0, 100)  # ./. there: unscored, no error
    assert not labels.mask[49]
