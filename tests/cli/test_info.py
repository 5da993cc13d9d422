"""`genoformer info --json` on the real chr20 set against numbers taken independently from pysam/samtools."""
from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pysam
from click.testing import CliRunner

from genoformer.commands.info import info

REGION = "chr20:10,000,001-10,100,000"
START, END = 10_000_000, 10_100_000


def run_info(*args) -> dict:
    result = CliRunner().invoke(info, [*map(str, args), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_info_matches_pysam_and_samtools(chr20):
    out = run_info("--reference", chr20["fasta"], "--bam", chr20["bam"], "--vcf", chr20["vcf"],
                   "--bed", chr20["bed"], "--region", REGION, "--k", 6)

    fai = dict(line.split("\t")[:2] for line in open(str(chr20["fasta"]) + ".fai"))
    assert out["reference"]["total_length"] == int(fai["chr20"])
    seq = pysam.FastaFile(str(chr20["fasta"])).fetch("chr20", START, END)
    [contig] = out["sequence"]
    assert contig["n_bases"] == seq.upper().count("N")
    assert contig["soft_masked_bases"] == sum(c.islower() for c in seq)
    assert contig["tokens"] == -(-(END - START) // 6)

    # reads: samtools' default filter (UNMAP, SECONDARY, QCFAIL, DUP), counted by hand over fetch
    with pysam.AlignmentFile(str(chr20["bam"])) as bam:
        reads = sum(1 for r in bam.fetch("chr20", START, END) if not r.flag & 0x704)
    assert out["alignments"]["reads"] == reads
    # depth: samtools depth -a -J (deletions count), the C implementation, not ours
    depth_text = pysam.depth("-a", "-J", "-r", f"chr20:{START + 1}-{END}", str(chr20["bam"]))
    depth = np.array([int(line.split("\t")[2]) for line in depth_text.splitlines()])
    assert depth.size == END - START
    assert abs(out["alignments"]["mean_depth"] - depth.mean()) < 1e-6

    kinds, genotypes = Counter(), Counter()
    with pysam.VariantFile(str(chr20["vcf"])) as vcf:
        for rec in vcf.fetch("chr20", START, END):
            if rec.start < START:
                continue
            ref, alts = rec.ref, rec.alts
            kinds["snv" if all(len(a) == len(ref) == 1 for a in alts) else "other"] += 1
            genotypes["/".join(map(str, rec.samples[0]["GT"]))] += 1
    v = out["variants"]
    assert v["total"] == sum(kinds.values()) == 221
    assert v["by_type"]["snv"] == kinds["snv"] == 186
    assert v["indels_or_complex"] == kinds["other"] == 35
    assert v["by_genotype"] == dict(genotypes)
    assert v["by_genotype"] == {"0/1": 124, "1/1": 92, "1/0": 4, "1/2": 1}

    assert out["bed"] == {"path": str(chr20["bed"]), "intervals": 11, "bases": 8_999}


def test_info_whole_reference_sarscov2(shared_data):
    fasta = shared_data / "sarscov2_mt192765" / "genome" / "genome.fasta"
    out = run_info("--reference", fasta)
    seq = pysam.FastaFile(str(fasta)).fetch("MT192765.1")
    assert out["region"] is None
    assert out["sequence"] == [{"name": "MT192765.1", "start": 0, "end": len(seq), "length": len(seq),
                                "n_bases": seq.upper().count("N"), "soft_masked_bases": 0}]


def test_info_reads_gff_annotation_as_train_does(shared_data):
    genome = shared_data / "sarscov2_mt192765" / "genome"
    out = run_info("--reference", genome / "genome.fasta", "--bed", genome / "genome.gff3")
    # counted independently: merge each feature type's 1-based inclusive intervals by hand
    spans: dict[str, list[tuple[int, int]]] = {}
    for line in (genome / "genome.gff3").read_text().splitlines():
        fields = line.split("\t")
        if line.startswith("#") or len(fields) != 9:
            continue
        spans.setdefault(fields[2], []).append((int(fields[3]) - 1, int(fields[4])))
    want = {}
    for name, ivs in spans.items():
        merged: list[list[int]] = []
        for s, e in sorted(ivs):
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        want[name] = {"intervals": len(merged), "bases": sum(e - s for s, e in merged)}
    assert out["bed"]["classes"] == want and "CDS" in want
    assert out["bed"]["bases"] == sum(c["bases"] for c in want.values())
