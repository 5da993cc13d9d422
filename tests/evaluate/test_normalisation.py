"""evaluate's normalisation against `bcftools norm`: the GIAB truth read with the reference (trimmed,
split, left-aligned) gives exactly the alleles of `bcftools norm -f REF -m -any` read as written; a
call placed elsewhere in a repeat matches; counts per kind and indel length against a plain count."""
from __future__ import annotations

import pysam
from pysam import bcftools

from genoformer.evaluate.callsets import read_callset
from genoformer.evaluate.variants import EvaluateConfig, evaluate
from genoformer.io.fasta import Reference


def test_normalised_truth_is_bcftools_norm(chr20, tmp_path):
    normed = tmp_path / "normed.vcf"
    bcftools.norm("-f", str(chr20["fasta"]), "-m", "-any", "-o", str(normed), str(chr20["vcf"]), catch_stdout=False)
    ours = read_callset(chr20["vcf"], reference=Reference(chr20["fasta"]))
    theirs = read_callset(normed)  # already normalised: trimming alone must not change it
    assert ours.alleles == theirs.alleles and len(ours.alleles) == 222


def test_a_right_shifted_indel_matches_and_kinds_and_lengths_count(chr20, tmp_path):
    fasta = pysam.FastaFile(str(chr20["fasta"]))
    with pysam.VariantFile(str(chr20["vcf"])) as vcf:
        header, records = vcf.header, list(vcf)
    # a deletion of one base in a run is written at the run's last base instead of its first
    shifted = 0
    calls = tmp_path / "calls.vcf"
    with pysam.VariantFile(str(calls), "w", header=header) as out:
        for rec in records:
            if not shifted and len(rec.ref) == 2 and rec.alts == (rec.ref[0],):
                base, p = rec.ref[1], rec.start + 1
                end = p
                while fasta.fetch("chr20", end + 1, end + 2).upper() == base:
                    end += 1
                if end > p:  # moved right inside the run: REF = base before the last copy + it
                    rec.pos = end  # 1-based = 0-based end - 1 + 1
                    rec.alleles = (fasta.fetch("chr20", end - 1, end + 1).upper(),
                                   fasta.fetch("chr20", end - 1, end).upper())
                    shifted += 1
            out.write(rec)
    assert shifted == 1
    result = evaluate(EvaluateConfig(calls=str(calls), truth_vcf=str(chr20["vcf"]), reference=str(chr20["fasta"])))
    assert result.counts["all"].fp == result.counts["all"].fn == 0
    plain = evaluate(EvaluateConfig(calls=str(calls), truth_vcf=str(chr20["vcf"])))  # no reference: no shift
    assert plain.counts["deletion"].fp == plain.counts["deletion"].fn == 1
    # kinds and length bins against a plain count of the bcftools-normalised, split truth
    normed = tmp_path / "normed.vcf"
    bcftools.norm("-f", str(chr20["fasta"]), "-m", "-any", "-o", str(normed), str(chr20["vcf"]), catch_stdout=False)
    want: dict[str, int] = {}
    with pysam.VariantFile(str(normed)) as vcf:
        for rec in vcf:
            change = len(rec.alts[0]) - len(rec.ref)
            if change == 0:
                want["snv"] = want.get("snv", 0) + 1
                continue
            kind = "insertion" if change > 0 else "deletion"
            size = abs(change)
            length = "1" if size == 1 else "2-5" if size <= 5 else "6-49" if size <= 49 else "50+"
            for row in (kind, "indel", f"{kind} {length}"):
                want[row] = want.get(row, 0) + 1
    got = {row: c.tp for row, c in result.counts.items() if c.tp}
    assert got == want | {"all": sum(v for k, v in want.items() if k in ("snv", "insertion", "deletion"))}
