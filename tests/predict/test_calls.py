"""Export's calls on a hand-made sample (pysam BAM, error-free reads of two haplotypes): planted SNV,
insertion, deletion, a deletion in a homopolymer (left-aligned) and a multi-allelic site give exactly
the expected VCF records; `bcftools norm -f REF --check-ref e` leaves them unchanged; normalise against
bcftools norm on the GIAB truth."""
from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pysam
import pytest
from pysam import bcftools

import read_factory as rf
from evaluate.test_export_evaluate import write_predictions
from genoformer.io.variant_classes import VARIANT_CLASSES
from genoformer.normalise import normalise_record
from genoformer.predict.export import ExportConfig, export

N = 700
HOMOPOLYMER = (300, 307)  # seven A's


def reference_sequence() -> str:
    seq = rf.random_sequence(N, seed=11).upper()
    seq = seq[:HOMOPOLYMER[0]] + "A" * 7 + seq[HOMOPOLYMER[1]:]
    # the bases either side of the run are not A, so the run is exactly HOMOPOLYMER
    before, after = "C" if seq[299] == "A" else seq[299], "G" if seq[307] == "A" else seq[307]
    return seq[:299] + before + seq[300:307] + after + seq[308:]


def two_haplotype_reads(seq: str, hap0: list[rf.Planted], hap1: list[rf.Planted]) -> list:
    """Reads of haplotype 0 carrying `hap0` and of haplotype 1 carrying `hap1`."""
    first = [r for r in rf.reads(seq, [dataclasses.replace(v, hom=True) for v in hap0]) if r.name.startswith("h0")]
    second = [r for r in rf.reads(seq, [dataclasses.replace(v, hom=True) for v in hap1]) if r.name.startswith("h1")]
    return sorted(first + second, key=lambda r: r.start)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    import bam_factory as bf
    from fasta_factory import write_fasta

    seq = reference_sequence()
    both = [rf.Planted("deletion", 200, length=3)]  # hom: bases 201-203
    hap1 = both + [rf.Planted("insertion", 100, "GT"), rf.Planted("deletion", 303, length=1),
                   rf.Planted("insertion", 450, "C"), rf.Planted("snv", 550, "T" if seq[550] != "T" else "G")]
    hap0 = both + [rf.Planted("insertion", 450, "CC")]
    folder = tmp_path_factory.mktemp("calls")
    fasta = write_fasta(folder / "reference.fa", {"c": seq})
    bam = bf.write_bam(folder / "reads.bam", {"c": N}, two_haplotype_reads(seq, hap0, hap1))
    # the model's view: classes on the truth's (left-aligned) bases
    classes = np.zeros(N, dtype=np.int64)
    classes[100] = VARIANT_CLASSES.index("insertion_het")
    classes[201:204] = VARIANT_CLASSES.index("deletion_hom_alt")
    classes[300] = VARIANT_CLASSES.index("deletion_het")  # the homopolymer's first A
    classes[450] = VARIANT_CLASSES.index("insertion_hom_alt")
    classes[550] = VARIANT_CLASSES.index("snv_het")
    probs = np.full((N, len(VARIANT_CLASSES)), 0.01 / (len(VARIANT_CLASSES) - 1))
    probs[np.arange(N), classes] = 0.99
    preds = folder / "preds.h5"
    write_predictions(preds, {"c": N}, {"c": {"span": (0, N), "covered": np.ones(N, bool), "probs": probs}},
                      task="variant", classes=list(VARIANT_CLASSES), reference=str(fasta))
    return {"seq": seq, "fasta": fasta, "bam": bam, "preds": preds, "folder": folder}


def records(path) -> list[tuple]:
    with pysam.VariantFile(str(path)) as vcf:
        return [(r.pos, r.ref, r.alts, r.samples[0]["GT"]) for r in vcf]


def test_planted_sites_give_exact_records(sample):
    seq, out = sample["seq"], sample["folder"] / "calls.vcf.gz"
    summary = export(ExportConfig(predictions=str(sample["preds"]), vcf=str(out), bam=str(sample["bam"]),
                                  progress=False), command="test")["vcf"]
    alt550 = "T" if seq[550] != "T" else "G"
    assert records(out) == [
        (101, seq[100], (seq[100] + "GT",), (0, 1)),                  # insertion after base 100
        (201, seq[200:204], (seq[200],), (1, 1)),                     # hom deletion of 201-203
        (300, seq[299:301], (seq[299],), (0, 1)),                     # the reads delete base 303: left-aligned
        (451, seq[450], (seq[450] + "C", seq[450] + "CC"), (1, 2)),   # two insertions after one base
        (551, seq[550], (alt550,), (0, 1)),
    ]
    assert summary["multi_allelic"] == 1 and summary["no_alt"] == 0
    with pysam.VariantFile(str(out)) as vcf:
        ad = {r.pos: r.samples[0]["AD"] for r in vcf}
    assert ad[451][1] > 0 and ad[451][2] > 0 and ad[201][0] == 0


def test_a_call_bleeding_onto_neighbours_keeps_the_genotype_of_the_alleles_bases(sample, tmp_path):
    """A model that calls the bases either side of a deletion too (its anchor, where the reads' deletions
    start, and the base after) with a het-looking mixture: the genotype comes from the deleted bases."""
    with h5py.File(sample["preds"]) as f:
        probs = f["contigs/c/variant/probs"][:].astype(np.float64)
    het, hom = VARIANT_CLASSES.index("deletion_het"), VARIANT_CLASSES.index("deletion_hom_alt")
    bleed = np.full(len(VARIANT_CLASSES), 0.01 / (len(VARIANT_CLASSES) - 1))
    bleed[het] = 0.99
    probs[[199, 200, 204, 205]] = bleed  # around the hom deletion of 201-203
    probs[[299, 301]] = probs[201]  # a hom-looking mixture beside the het deletion at 300
    assert probs[199:206, het].mean() > probs[199:206, hom].mean()  # the event's mean alone would say het
    preds = tmp_path / "bleeding.h5"
    write_predictions(preds, {"c": N}, {"c": {"span": (0, N), "covered": np.ones(N, bool), "probs": probs}},
                      task="variant", classes=list(VARIANT_CLASSES), reference=str(sample["fasta"]))
    out = tmp_path / "calls.vcf.gz"
    export(ExportConfig(predictions=str(preds), vcf=str(out), bam=str(sample["bam"]), progress=False), command="test")
    called = {pos: (ref, alts, gt) for pos, ref, alts, gt in records(out)}
    seq = sample["seq"]
    assert called[201] == (seq[200:204], (seq[200],), (1, 1))
    assert called[300] == (seq[299:301], (seq[299],), (0, 1))
    with pysam.VariantFile(str(out)) as vcf:
        cp = {r.pos: r.samples[0]["CP"] for r in vcf}
    assert cp[201][hom] == pytest.approx(0.99, abs=1e-3)  # the deleted bases' probabilities, not the event's


def test_a_hom_call_is_multi_allelic_only_with_a_second_allele_of_its_type(tmp_path):
    """A hom insertion with a het SNV on the next base (one haplotype carries both): the model calls the
    insertion hom and the SNV's base nothing, so the record is the insertion alone, 1/1; two inserted
    sequences are 1/2 (test_planted_sites_give_exact_records)."""
    import bam_factory as bf
    from fasta_factory import write_fasta

    seq = reference_sequence()
    snv = rf.Planted("snv", 621, "T" if seq[621] != "T" else "G")
    bam = bf.write_bam(tmp_path / "reads.bam", {"c": N}, two_haplotype_reads(
        seq, [rf.Planted("insertion", 620, "A")], [rf.Planted("insertion", 620, "A"), snv]))
    fasta = write_fasta(tmp_path / "reference.fa", {"c": seq})
    probs = np.zeros((N, len(VARIANT_CLASSES)))
    probs[:, 0] = 1.0
    probs[620] = np.eye(len(VARIANT_CLASSES))[VARIANT_CLASSES.index("insertion_hom_alt")]
    preds = tmp_path / "preds.h5"
    write_predictions(preds, {"c": N}, {"c": {"span": (0, N), "covered": np.ones(N, bool), "probs": probs}},
                      task="variant", classes=list(VARIANT_CLASSES), reference=str(fasta))
    out = tmp_path / "calls.vcf.gz"
    summary = export(ExportConfig(predictions=str(preds), vcf=str(out), bam=str(bam), progress=False),
                     command="test")["vcf"]
    assert records(out) == [(621, seq[620], (seq[620] + "A",), (1, 1))]
    assert summary["multi_allelic"] == 0
    with pysam.AlignmentFile(str(bam)) as reads:  # the reads do show the SNV: it was left out, not missed
        shown = reads.count_coverage("c", 621, 622, quality_threshold=0)["ACGT".index(snv.alt)][0]
        assert shown > 0.3 * reads.count("c", 621, 622)


def test_bcftools_norm_changes_nothing(sample):
    out = sample["folder"] / "norm-check.vcf.gz"
    export(ExportConfig(predictions=str(sample["preds"]), vcf=str(out), bam=str(sample["bam"]), progress=False),
           command="test")
    normed = sample["folder"] / "normed.vcf"
    bcftools.norm("-f", str(sample["fasta"]), "--check-ref", "e", "-o", str(normed), str(out), catch_stdout=False)
    assert records(normed) == records(out) and len(records(out)) == 5


def test_normalise_record_matches_bcftools_norm_on_the_truth(chr20, tmp_path):
    """Every GIAB record through normalise_record equals what `bcftools norm -f REF` makes of it."""
    normed = tmp_path / "normed.vcf"
    bcftools.norm("-f", str(chr20["fasta"]), "-o", str(normed), str(chr20["vcf"]), catch_stdout=False)
    with pysam.FastaFile(str(chr20["fasta"])) as fa, pysam.VariantFile(str(chr20["vcf"])) as vcf:
        def fetch(start, end):
            return fa.fetch("chr20", start, end).upper()
        ours = [normalise_record(r.start, r.alleles, fetch) for r in vcf]
    with pysam.VariantFile(str(normed)) as vcf:
        theirs = [(r.start, tuple(a.upper() for a in r.alleles)) for r in vcf]
    assert sorted(ours) == sorted(theirs) and len(ours) == 221


def test_normalise_by_hand():
    seq = "GGCAAAAT"

    def fetch(start, end):
        return seq[start:end]
    assert normalise_record(6, ("AT", "T"), fetch) == (2, ("CA", "C"))        # deletion slides left in the run
    assert normalise_record(5, ("A", "AA"), fetch) == (2, ("C", "CA"))        # insertion too
    assert normalise_record(3, ("AAAAT", "AAAT"), fetch) == (2, ("CA", "C"))  # trimmed, then slid
    assert normalise_record(0, ("GG", "G"), fetch) == (0, ("GG", "G"))        # nothing left of the contig
    assert normalise_record(2, ("CA", "TA"), fetch) == (2, ("C", "T"))        # padded SNV trimmed


def _gvcf_records(path) -> list:
    with pysam.VariantFile(str(path)) as vcf:
        return [(r.start, r.stop, r.ref, r.alts, r.samples[0]["GT"],
                 int(str(r).split("END=")[1].split(";")[0].split("\t")[0]) if "END=" in str(r) else None)
                for r in vcf]


def test_gvcf_covers_every_base_once_and_keeps_the_calls(sample):
    out, gvcf = sample["folder"] / "g-calls.vcf.gz", sample["folder"] / "a.g.vcf.gz"
    summary = export(ExportConfig(predictions=str(sample["preds"]), vcf=str(out), gvcf=str(gvcf),
                                  bam=str(sample["bam"]), progress=False), command="test")
    got = _gvcf_records(gvcf)
    variants = [(s, ref, alts[:-1], gt) for s, _, ref, alts, gt, end in got if alts != ("<*>",)]
    assert [v[:3] for v in variants] == [(r[0] - 1, r[1], r[2]) for r in records(out)]
    assert all(alts[-1] == "<*>" for _, _, _, alts, _, _ in got)
    seen = np.zeros(N, dtype=np.int64)
    for start, stop, ref, alts, gt, end in got:
        if alts == ("<*>",):
            assert gt == (0, 0) and end == stop and ref == sample["seq"][start]
        seen[start:stop] += 1
    assert (seen == 1).all()  # every base of the covered contig in exactly one record
    assert summary["gvcf"]["reference_blocks"] == sum(a == ("<*>",) for *_, a, _, _ in got)
    with pysam.VariantFile(str(gvcf)) as vcf:
        blocks = [r for r in vcf if r.alts == ("<*>",)]
        assert all(r.samples[0]["GQ"] >= 0 and r.samples[0]["MIN_DP"] >= 0 for r in blocks)
        assert all(len(r.samples[0]["PL"]) == 3 for r in blocks)
        multi = next(r for r in vcf.fetch("c", 450, 451))
        assert multi.alts == (multi.ref + "C", multi.ref + "CC", "<*>") and len(multi.samples[0]["PL"]) == 10


def test_bcftools_merges_two_samples_gvcfs(sample, tmp_path):
    import bam_factory as bf

    seq = sample["seq"]
    # a second sample on the same reference: one het SNV at 620, reads of both haplotypes
    alt = "A" if seq[620] != "A" else "C"
    reads_b = two_haplotype_reads(seq, [], [rf.Planted("snv", 620, alt)])
    bam_b = bf.write_bam(tmp_path / "b.bam", {"c": N}, reads_b)
    probs = np.full((N, len(VARIANT_CLASSES)), 0.01 / (len(VARIANT_CLASSES) - 1))
    probs[:, 0] = 0.99
    probs[620] = 0.01 / (len(VARIANT_CLASSES) - 1)
    probs[620, VARIANT_CLASSES.index("snv_het")] = 0.99
    write_predictions(tmp_path / "b.h5", {"c": N}, {"c": {"span": (0, N), "covered": np.ones(N, bool), "probs": probs}},
                      task="variant", classes=list(VARIANT_CLASSES), reference=str(sample["fasta"]))
    a, b = tmp_path / "a.g.vcf.gz", tmp_path / "b.g.vcf.gz"
    export(ExportConfig(predictions=str(sample["preds"]), gvcf=str(a), bam=str(sample["bam"]), sample="A",
                        progress=False), command="test")
    export(ExportConfig(predictions=str(tmp_path / "b.h5"), gvcf=str(b), bam=str(bam_b), sample="B",
                        progress=False), command="test")
    merged = tmp_path / "merged.vcf"
    bcftools.merge("--gvcf", str(sample["fasta"]), "-o", str(merged), str(a), str(b), catch_stdout=False)
    with pysam.VariantFile(str(merged)) as vcf:
        assert list(vcf.header.samples) == ["A", "B"]
        by_pos = {r.start: r for r in vcf}
    snv_b, snv_a = by_pos[620], by_pos[550]
    # bcftools orders the merged ALTs its own way: compare the alleles the genotypes name
    assert [snv_b.alleles[i] for i in snv_b.samples["B"]["GT"]] == [seq[620], alt]
    assert snv_b.samples["A"]["GT"] == (0, 0) and snv_a.samples["B"]["GT"] == (0, 0)
    assert [snv_a.alleles[i] for i in snv_a.samples["A"]["GT"]] == [seq[550], "T" if seq[550] != "T" else "G"]
    # every base of the contig is in one merged record
    covered = np.zeros(N, dtype=np.int64)
    for r in by_pos.values():
        covered[r.start:r.stop] += 1
    assert (covered >= 1).all()
