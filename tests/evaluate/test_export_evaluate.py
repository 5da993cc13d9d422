"""`genoformer export` and `genoformer evaluate` on real data: the GIAB chr20 truth against itself and
against a copy with planted errors; exported VCF/BED/bedGraph read back with pysam or a plain reader
and compared with what numpy computes from the probabilities; bad input through the real CLI."""
from __future__ import annotations

import errno
import hashlib
import json
import math
import shutil
import subprocess

import h5py
import numpy as np
import pysam
import pytest

from cli.test_bad_inputs import assert_clean_failure, run_cli
from genoformer.predict import export as export_module
from genoformer.predict import export_vcf
from genoformer.errors import OutputError, VariantError
from genoformer.evaluate.callsets import Allele, normalise
from genoformer.evaluate.variants import EvaluateConfig, evaluate
from genoformer.evaluate.patterns import PatternEvaluateConfig, evaluate_pattern
from genoformer.predict.export import ExportConfig, export
from genoformer.train.metrics import auroc

CHR20_LEN = 63_025_520
GENOTYPES = ["hom_ref", "het", "hom_alt"]


# ---------------------------------------------------------------------------------------------
# helpers: contract files written with plain h5py, and an independent reading of the truth


def write_predictions(path, contigs: dict[str, int], arrays: dict[str, dict[str, np.ndarray]], *, task: str,
                      classes: list[str], reference: str = "", md5: dict | None = None, complete: bool = True):
    """A predictions file to the contract (docs/hdf5.md). `arrays[contig]` holds whole-contig arrays for
    `covered` and `probs` (and alt / depth / deletion_fraction for variant files)."""
    with h5py.File(path, "w") as fh:
        fh.attrs.update(dict(
            format="genoformer-predictions", format_version=1, complete=complete, genoformer_version="0.1.0",
            task=task, model_sha256="ab" * 32, model=json.dumps({"task": task}), reference=reference,
            contig_md5=json.dumps(md5 or {}), command="genoformer predict (test)",
            created="2026-11-23T18:00:00+00:00", hash_seed=7, window=1536, margin=384,
            predict_config=json.dumps({}), bam=""))
        for contig, length in contigs.items():
            g = fh.create_group(f"contigs/{contig}")
            g.attrs["length"] = length
            a = arrays[contig]
            kw = dict(compression="gzip", fillvalue=0)
            chunk = min(65536, length)
            g.create_dataset("covered", shape=(length,), dtype=bool, chunks=(chunk,), **kw)
            probs = g.create_dataset(f"{task}/probs", shape=(length, len(classes)), dtype=np.float16,
                                     chunks=(chunk, len(classes)), **kw)
            probs.attrs["classes"] = classes
            lo, hi = a["span"]
            g["covered"][lo:hi] = a["covered"]
            probs[lo:hi] = a["probs"].astype(np.float16)
            for name, dtype in (("alt", np.uint8), ("depth", np.uint16), ("deletion_fraction", np.float16)):
                if name in a:
                    g.create_dataset(f"variant/{name}", shape=(length,), dtype=dtype, chunks=(chunk,), **kw)
                    g[f"variant/{name}"][lo:hi] = a[name].astype(dtype)


@pytest.fixture(scope="module")
def chr20_seq(chr20) -> str:
    with pysam.FastaFile(str(chr20["fasta"])) as fa:
        return fa.fetch("chr20").upper()


@pytest.fixture(scope="module")
def chr20_md5(chr20_seq) -> dict:
    return {"chr20": hashlib.md5(chr20_seq.encode()).hexdigest()}


def bed_intervals(path) -> list[tuple[int, int]]:
    with open(path) as fh:
        return [(int(f[1]), int(f[2])) for f in (line.split("\t") for line in fh if line.strip())]


def truth_counts_inside(chr20) -> dict[str, int]:
    """SNV and indel records of the truth inside the confident BED, counted with pysam and plain Python."""
    bed = bed_intervals(chr20["bed"])
    counts = {"snv": 0, "indel": 0}
    with pysam.VariantFile(str(chr20["vcf"])) as vcf:
        for rec in vcf:
            if any(s <= rec.start and rec.start + len(rec.ref) <= e for s, e in bed):
                assert len(rec.alts) == 1  # inside the BED every record is bi-allelic: one allele each
                counts["snv" if len(rec.ref) == len(rec.alts[0]) == 1 else "indel"] += 1
    return counts


# ---------------------------------------------------------------------------------------------
# evaluate: variants


def test_normalisation_by_hand():
    # padded before, padded after, and the minimal form of one insertion are one allele
    ins = Allele("c", 101, "", "T")
    assert normalise("c", 100, "A", "AT") == [ins]
    assert normalise("c", 99, "GA", "GAT") == [ins]
    assert normalise("c", 100, "AC", "ATC") == [ins]
    assert normalise("c", 99, "GA", "G") == [Allele("c", 100, "A", "")]
    assert normalise("c", 10, "ACG", "TCA") == [Allele("c", 10, "A", "T"), Allele("c", 12, "G", "A")]  # MNP
    assert normalise("c", 10, "AT", "GCC") == [Allele("c", 10, "AT", "GCC")]  # complex: one indel
    assert [normalise("c", 5, "A", a) for a in ("<DEL>", "*", "A")] == [[], [], []]
    assert Allele("c", 101, "", "T").span() == (100, 102) and Allele("c", 100, "AC", "").span() == (100, 102)


def _small_vcf(path, rows):
    header = pysam.VariantHeader()
    header.contigs.add("c", length=1000)
    header.add_line('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">')
    header.add_line('##FILTER=<ID=LowGQ,Description="Low GQ">')
    header.add_sample("S")
    with pysam.VariantFile(str(path), "w", header=header) as out:
        for pos, alleles, gt, *flt in rows:
            rec = out.new_record(contig="c", start=pos, alleles=alleles, filter=flt[0] if flt else "PASS")
            rec.samples[0]["GT"] = gt
            out.write(rec)
    return path


def test_multiallelic_mnp_and_filtered_records(tmp_path):
    truth = _small_vcf(tmp_path / "t.vcf", [
        (10, ("A", "AC", "AG"), (1, 2)),  # two insertions, each het
        (50, ("ACG", "TCA"), (1, 1)),  # an MNP: two hom SNVs
        (90, ("G", "T"), (0, 1)),
        (95, ("G", "T"), (None, None)),  # no genotype: skipped
    ])
    calls = _small_vcf(tmp_path / "c.vcf", [
        (9, ("TA", "TAC"), (0, 1)),  # the first insertion, padded differently
        (10, ("A", "AG"), (1, 1)),  # the second, with the wrong zygosity
        (50, ("A", "T"), (1, 1)),
        (52, ("G", "A"), (0, 1)),  # the MNP's second base, wrong zygosity
        (90, ("G", "T"), (0, 1), "LowGQ"),  # filtered: not a call
        (200, ("C", "CT"), (0, 0)),  # hom_ref: not a call
    ])
    result = evaluate(EvaluateConfig(calls=str(calls), truth_vcf=str(truth)))
    snv, indel = result.counts["snv"], result.counts["indel"]
    assert (snv.tp, snv.fp, snv.fn, snv.genotype_matches) == (2, 0, 1, 1)
    assert (indel.tp, indel.fp, indel.fn, indel.genotype_matches) == (2, 0, 0, 1)
    assert result.skipped == {"calls": {"filtered": 1, "hom_ref": 1}, "truth": {"missing_genotype": 1}}


def test_truth_against_itself_inside_the_confident_bed(chr20):
    expected = truth_counts_inside(chr20)
    result = evaluate(EvaluateConfig(calls=str(chr20["vcf"]), truth_vcf=str(chr20["vcf"]),
                                     confident_bed=str(chr20["bed"]), reference=str(chr20["fasta"])))
    for kind in ("snv", "indel"):
        c = result.counts[kind]
        assert (c.tp, c.fp, c.fn) == (expected[kind], 0, 0)
        assert c.precision == c.recall == c.f1 == c.genotype_concordance == 1.0
    assert result.scored_bases == sum(e - s for s, e in bed_intervals(chr20["bed"]))
    assert expected == {"snv": 45, "indel": 4}  # the data README: 49 of the 221 truth variants are inside


def _planted_copy(chr20, chr20_seq, out) -> dict:
    """The truth with planted errors; returns what was planted."""
    bed = bed_intervals(chr20["bed"])
    inside = lambda start, end: any(s <= start and end <= e for s, e in bed)  # noqa: E731
    with pysam.VariantFile(str(chr20["vcf"])) as vcf:
        header = vcf.header.copy()
        records = list(vcf)
    snvs = [r for r in records if inside(r.start, r.stop) and len(r.ref) == len(r.alts[0]) == 1]
    indels = [r for r in records if inside(r.start, r.stop) and len(r.ref) != len(r.alts[0])]
    dropped = {id(r) for r in snvs[:3] + indels[:1]}
    flipped = {id(r) for r in snvs[10:15]}
    padded = indels[1]  # written again with one more leading reference base
    taken = {r.start for r in records}
    false_sites = [p for p in range(bed[0][0] + 20, bed[0][1]) if not any(abs(p - t) < 3 for t in taken)][:4:]
    assert len(false_sites) == 4 and all(inside(p, p + 1) for p in false_sites)
    rows = []
    with pysam.VariantFile(str(out), "w", header=header) as dst:
        for r in records:
            if id(r) in dropped:
                continue
            rec = dst.new_record(contig=r.contig, start=r.start, alleles=r.alleles, qual=r.qual, filter=r.filter.keys())
            gt = r.samples[0]["GT"]
            if id(r) in flipped:
                gt = (0, 1) if gt == (1, 1) else (1, 1)
            if r is padded:
                base = chr20_seq[r.start - 1]
                rec = dst.new_record(contig=r.contig, start=r.start - 1, alleles=tuple(base + a for a in r.alleles),
                                     qual=r.qual, filter=r.filter.keys())
            rec.samples[0]["GT"] = gt
            rows.append(rec)
        for p in false_sites:
            ref = chr20_seq[p]
            rec = dst.new_record(contig="chr20", start=p, alleles=(ref, "ACGT"[("ACGT".index(ref) + 1) % 4]),
                                 qual=50, filter="PASS")
            rec.samples[0]["GT"] = (0, 1)
            rows.append(rec)
        for rec in sorted(rows, key=lambda x: x.start):
            dst.write(rec)
    pysam.tabix_index(str(out), preset="vcf", force=True)
    return {"snv_dropped": 3, "indel_dropped": 1, "snv_false": 4, "snv_flipped": 5}


def test_planted_errors_give_exactly_the_planted_counts(chr20, chr20_seq, tmp_path):
    planted = _planted_copy(chr20, chr20_seq, tmp_path / "calls.vcf")
    expected = truth_counts_inside(chr20)
    proc = run_cli("evaluate", "--calls", tmp_path / "calls.vcf.gz", "--truth-vcf", chr20["vcf"],
                   "--confident-bed", chr20["bed"], "--reference", chr20["fasta"], "--json", tmp_path / "ev.json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "ev.json").read_text())
    snv, indel = report["snv"], report["indel"]
    snv_tp = expected["snv"] - planted["snv_dropped"]
    assert (snv["tp"], snv["fp"], snv["fn"]) == (snv_tp, planted["snv_false"], planted["snv_dropped"])
    assert snv["genotype_matches"] == snv_tp - planted["snv_flipped"]
    assert snv["precision"] == pytest.approx(snv_tp / (snv_tp + planted["snv_false"]))
    assert snv["recall"] == pytest.approx(snv_tp / expected["snv"])
    # the re-padded indel still matches: only the dropped one is missing
    indel_tp = expected["indel"] - planted["indel_dropped"]
    assert (indel["tp"], indel["fp"], indel["fn"]) == (indel_tp, 0, 1)
    assert indel["genotype_concordance"] == 1.0
    assert report["all"]["tp"] == snv_tp + indel_tp
    # the table on stdout has the same numbers
    row = next(line.split() for line in proc.stdout.splitlines() if line.startswith("SNV"))
    assert row[1:4] == [str(snv_tp), str(planted["snv_false"]), str(planted["snv_dropped"])]


def test_regions_restrict_scoring_and_ref_bases_are_checked(chr20, chr20_seq, tmp_path):
    result = evaluate(EvaluateConfig(calls=str(chr20["vcf"]), truth_vcf=str(chr20["vcf"]),
                                     confident_bed=str(chr20["bed"]), regions=["chr20:10,000,001-10,005,000"]))
    with pysam.VariantFile(str(chr20["vcf"])) as vcf:
        bed = bed_intervals(chr20["bed"])
        n = sum(1 for r in vcf.fetch("chr20", 10_000_000, 10_005_000)
                if r.stop <= 10_005_000 and any(s <= r.start and r.stop <= e for s, e in bed))
    assert result.counts["all"].tp == n and result.counts["all"].fp == result.counts["all"].fn == 0
    # a REF base that is not the reference's: the VCF was made on another reference
    bad = tmp_path / "bad.vcf"
    text = pysam.VariantFile(str(chr20["vcf"])).header
    with pysam.VariantFile(str(bad), "w", header=text) as out:
        ref = chr20_seq[10_001_000]
        wrong = "ACGT"[("ACGT".index(ref) + 1) % 4]
        rec = out.new_record(contig="chr20", start=10_001_000, alleles=(wrong, ref), filter="PASS")
        rec.samples[0]["GT"] = (0, 1)
        out.write(rec)
    with pytest.raises(VariantError, match="does not match"):
        evaluate(EvaluateConfig(calls=str(bad), truth_vcf=str(chr20["vcf"]), reference=str(chr20["fasta"])))
    # a length mismatch on a contig with nothing scored (hg19 chrM 16,571 vs b37 16,569) is only a warning
    with pysam.VariantFile(str(chr20["vcf"])) as vcf:
        text = str(vcf.header).replace("ID=chrM,length=16569", "ID=chrM,length=16571")
        body = "".join(str(r) for r in vcf)
    hg19 = tmp_path / "hg19_header.vcf"
    hg19.write_text(text + body)
    result = evaluate(EvaluateConfig(calls=str(hg19), truth_vcf=str(chr20["vcf"]), confident_bed=str(chr20["bed"])))
    assert result.counts["all"].f1 == 1.0


# ---------------------------------------------------------------------------------------------
# export: VCF


def expected_calls(seq: str, start: int, a: dict, threshold=0.5, min_df=0.25) -> list[tuple]:
    """(pos, ref, alt, gt, gq, qual, gp) computed with numpy from the stored (float16) arrays."""
    p = a["probs"].astype(np.float16).astype(np.float32)
    df = a["deletion_fraction"].astype(np.float16).astype(np.float32)
    called = a["covered"] & ((p.argmax(1) > 0) | (p[:, 1] + p[:, 2] >= threshold))
    dele = called & (df >= min_df)
    out = []

    def row(pos, ref, alt, probs):
        probs = probs.astype(np.float64)
        gt = 1 + int(np.argmax(probs[1:]))
        gq = int(min(99, np.rint(-10 * np.log10(max(1 - probs[gt], 1e-10)))))
        return (pos, ref, alt, (0, 1) if gt == 1 else (1, 1), gq, -10 * np.log10(max(probs[0], 1e-10)),
                tuple(probs))

    for i in np.flatnonzero(called & ~dele):
        ref, alt = seq[start + i], chr(a["alt"][i]) if a["alt"][i] else ""
        if ref in "ACGT" and alt:
            out.append(row(start + i, ref, alt, p[i]))
    padded = np.concatenate([[False], dele, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    for s, e in zip(edges[::2], edges[1::2]):
        anchor = start + s - 1
        out.append(row(anchor, seq[anchor:start + e], seq[anchor], p[s:e].mean(0)))
    return sorted(out, key=lambda r: r[0])


def read_vcf(path) -> list[tuple]:
    with pysam.VariantFile(str(path)) as vcf:
        return [(r.start, r.ref, r.alts[0], r.samples[0]["GT"], r.samples[0]["GQ"], r.qual, r.samples[0]["GP"])
                for r in vcf]


def assert_same_calls(got: list[tuple], want: list[tuple]):
    assert [g[:5] for g in got] == [w[:5] for w in want]
    for g, w in zip(got, want):
        assert g[5] == pytest.approx(w[5], abs=0.01)
        assert g[6] == pytest.approx(w[6], abs=1e-4)


def test_planted_sites_by_hand(chr20, chr20_seq, chr20_md5, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "BLOCK", 1000)  # so a deletion run crosses a block boundary
    start, n = 10_000_000, 3000
    probs = np.tile([0.9, 0.06, 0.04], (n, 1))
    alt = np.zeros(n, np.uint8)
    df = np.zeros(n)
    sites = {}
    acgt = [i for i in range(n) if chr20_seq[start + i] in "ACGT"]

    def plant(i, p, base=None, deleted=0.0):
        probs[i] = p
        alt[i] = ord(base) if base else 0
        df[i] = deleted
        sites[i] = p

    other = lambda i: "ACGT"[("ACGT".index(chr20_seq[start + i]) + 2) % 4]  # noqa: E731
    plant(acgt[10], [0.45, 0.30, 0.25], other(acgt[10]))  # argmax hom_ref but P(non-ref) 0.55: het
    plant(acgt[20], [0.10, 0.20, 0.70], other(acgt[20]))  # hom_alt
    plant(acgt[30], [0.20, 0.70, 0.10])  # no alt base in the reads: not written
    plant(acgt[40], [0.60, 0.25, 0.15], other(acgt[40]))  # hom_ref wins and P(non-ref) 0.4: not called
    for i in range(997, 1003):  # one deletion of 6 bases across the 1,000-base block boundary
        plant(i, [0.2, 0.6, 0.2], deleted=0.5)
    arrays = {"chr20": {"span": (start, start + n), "covered": np.ones(n, bool), "probs": probs, "alt": alt,
                        "depth": np.full(n, 40), "deletion_fraction": df}}
    h5 = tmp_path / "p.h5"
    write_predictions(h5, {"chr20": CHR20_LEN}, arrays, task="variant", classes=GENOTYPES,
                      reference=str(chr20["fasta"]), md5=chr20_md5)
    summary = export(ExportConfig(predictions=str(h5), vcf=str(tmp_path / "c.vcf.gz"), progress=False,
                                  regions=["chr20:10,000,001-10,003,000"], sample="NA12878"))
    got = read_vcf(tmp_path / "c.vcf.gz")
    s = chr20_seq
    assert [g[:4] for g in got] == [
        (start + acgt[10], s[start + acgt[10]], other(acgt[10]), (0, 1)),
        (start + acgt[20], s[start + acgt[20]], other(acgt[20]), (1, 1)),
        (start + 996, s[start + 996:start + 1003], s[start + 996], (0, 1)),
    ]
    # GQ = phred(1 - P(GT)), QUAL = phred(P(hom_ref)), on the float16 values the file holds
    f16 = lambda x: float(np.float16(x))  # noqa: E731
    assert got[0][4] == round(-10 * math.log10(1 - f16(0.30))) == 2
    assert got[1][4] == round(-10 * math.log10(1 - f16(0.70))) == 5
    assert got[0][5] == pytest.approx(-10 * math.log10(f16(0.45)), abs=0.01)
    assert summary["vcf"]["no_alt"] == 1 and summary["vcf"]["deletions"] == 1 and summary["vcf"]["snvs"] == 2
    with pysam.VariantFile(str(tmp_path / "c.vcf.gz")) as vcf:
        assert list(vcf.header.samples) == ["NA12878"]
        assert vcf.header.contigs["chr20"].length == CHR20_LEN
        meta = {r.key: r.value for r in vcf.header.records if r.value}
        assert meta["source"] == "genoformer 0.1.0" and meta["genoformer_model_sha256"] == "ab" * 32
        assert meta["genoformer_hash_seed"] == "7" and meta["reference"].endswith(chr20["fasta"].name)
        assert vcf.header.formats["GP"].number == "G"
        assert len(list(vcf.fetch("chr20", start + 990, start + 1010))) == 1  # the tabix index works


def _small_variant_file(tmp_path) -> str:
    """ref.fa (one 300 bp contig t1) and p.h5: deletions of its first 3 and last 2 bases, hom_ref elsewhere."""
    seq = "ACGTTGCAAC" * 30
    fasta = tmp_path / "ref.fa"
    fasta.write_text(">t1\n" + seq + "\n")
    n = len(seq)
    probs, df, alt = np.tile([0.9, 0.05, 0.05], (n, 1)), np.zeros(n), np.zeros(n, np.uint8)
    probs[:3], df[:3] = [0.1, 0.2, 0.7], 0.9  # the first 3 bases deleted: padded with the base after
    probs[-2:], df[-2:] = [0.1, 0.6, 0.3], 0.5  # the last 2: anchored on the base before
    write_predictions(tmp_path / "p.h5", {"t1": n}, {"t1": {"span": (0, n), "covered": np.ones(n, bool),
                                                         "probs": probs, "alt": alt, "depth": np.full(n, 30),
                                                         "deletion_fraction": df}},
                      task="variant", classes=GENOTYPES, reference=str(fasta),
                      md5={"t1": hashlib.md5(seq.encode()).hexdigest()})
    return seq


def test_deletions_at_contig_ends(tmp_path):
    seq = _small_variant_file(tmp_path)
    n, fasta = len(seq), tmp_path / "ref.fa"
    out = tmp_path / "c.vcf.gz"
    export(ExportConfig(predictions=str(tmp_path / "p.h5"), vcf=str(out), progress=False))
    assert [g[:4] for g in read_vcf(out)] == [(0, seq[:4], seq[3], (1, 1)), (n - 3, seq[-3:], seq[-3], (0, 1))]
    if shutil.which("bcftools"):  # REF bases checked against the FASTA by an independent tool
        proc = subprocess.run(["bcftools", "norm", "-f", str(fasta), "-c", "e", "-Ou", "-o", "/dev/null", str(out)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    # another sequence of the same length is not the reference the predictions were made on
    other = tmp_path / "other.fa"
    other.write_text(">t1\n" + seq[::-1] + "\n")
    proc = run_cli("export", tmp_path / "p.h5", "--vcf", tmp_path / "o.vcf.gz", "--reference", other)
    assert_clean_failure(proc, 3, "other.fa", "md5")
    assert not (tmp_path / "o.vcf.gz").exists()


def test_records_follow_the_reference_contig_order(tmp_path):
    rng = np.random.default_rng(0)
    seqs = {c: "".join(rng.choice(list("ACGT"), 200)) for c in ("chr2", "chr10", "chr1")}  # not alphabetical
    fasta = tmp_path / "ref.fa"
    fasta.write_text("".join(f">{c}\n{s}\n" for c, s in seqs.items()))
    arrays = {c: {"span": (0, 200), "covered": np.ones(200, bool), "probs": np.tile([0.2, 0.7, 0.1], (200, 1)),
                  "alt": np.frombuffer("".join("A" if b != "A" else "C" for b in s).encode(), np.uint8),
                  "depth": np.full(200, 30), "deletion_fraction": np.zeros(200)} for c, s in seqs.items()}
    write_predictions(tmp_path / "p.h5", dict.fromkeys(seqs, 200), arrays, task="variant", classes=GENOTYPES,
                      reference=str(fasta), md5={c: hashlib.md5(s.encode()).hexdigest() for c, s in seqs.items()})
    out = tmp_path / "c.vcf.gz"
    export(ExportConfig(predictions=str(tmp_path / "p.h5"), vcf=str(out), progress=False))
    with pysam.VariantFile(str(out)) as vcf:
        assert list(vcf.header.contigs) == list(seqs)
        assert list(dict.fromkeys(r.contig for r in vcf)) == list(seqs)


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), KeyboardInterrupt()])
def test_a_failed_export_leaves_nothing(tmp_path, monkeypatch, failure):
    _small_variant_file(tmp_path)
    out = tmp_path / "c.vcf.gz"
    out.write_text("old calls")
    (tmp_path / "c.vcf.gz.tbi").write_text("old index")

    def fail(*args):
        raise failure

    monkeypatch.setattr(export_vcf, "_record", fail)  # the disk fills up, or ^C, at the first record
    with pytest.raises(OutputError if isinstance(failure, OSError) else KeyboardInterrupt):
        export(ExportConfig(predictions=str(tmp_path / "p.h5"), vcf=str(out), force=True, progress=False))
    assert out.read_text() == "old calls" and (tmp_path / "c.vcf.gz.tbi").read_text() == "old index"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.vcf.gz", "c.vcf.gz.tbi", "p.h5", "ref.fa",
                                                          "ref.fa.fai"]


def test_random_probabilities_exported_as_numpy_computes_them(chr20, chr20_seq, chr20_md5, tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "BLOCK", 700)
    rng = np.random.default_rng(5)
    start, n = 10_000_000, 4000
    probs = rng.dirichlet([2, 1, 1], size=n)
    covered = np.ones(n, bool)
    covered[1500:1800] = False
    df = np.where(rng.random(n) < 0.15, rng.choice([0.3, 0.6, 1.0], n), 0.0)
    alt = rng.choice(np.frombuffer(b"\0ACGT", np.uint8), size=n, p=[0.1, 0.225, 0.225, 0.225, 0.225])
    alt = np.where(alt == np.frombuffer(chr20_seq[start:start + n].encode(), np.uint8), 0, alt)  # never REF
    arrays = {"chr20": {"span": (start, start + n), "covered": covered, "probs": probs * covered[:, None],
                        "alt": alt, "depth": rng.integers(0, 80, n), "deletion_fraction": df}}
    h5 = tmp_path / "p.h5"
    write_predictions(h5, {"chr20": CHR20_LEN}, arrays, task="variant", classes=GENOTYPES,
                      reference=str(chr20["fasta"]), md5=chr20_md5)
    out = tmp_path / "calls.vcf.gz"
    summary = export(ExportConfig(predictions=str(h5), vcf=str(out), min_gq=3, progress=False,
                                  regions=["chr20:10,000,001-10,004,000"]))
    want = expected_calls(chr20_seq, start, arrays["chr20"])
    got = read_vcf(out)
    assert len(want) > 300 and summary["vcf"]["records"] == len(want)
    assert_same_calls(got, want)
    with pysam.VariantFile(str(out)) as vcf:
        low = [r.samples[0]["GQ"] < 3 for r in vcf]
    with pysam.VariantFile(str(out)) as vcf:
        assert [r.filter.keys() == ["LowGQ"] for r in vcf] == low and any(low) and not all(low)
    if shutil.which("bcftools") is None:
        pytest.skip("bcftools not installed (apt-get install bcftools)")
    proc = subprocess.run(["bcftools", "view", "-H", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert len(proc.stdout.splitlines()) == len(want)
    proc = subprocess.run(["bcftools", "norm", "-f", str(chr20["fasta"]), "-c", "e", "-Ou", "-o", "/dev/null",
                           str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr  # every REF matches the reference


def test_real_predictions_through_export_and_evaluate(tiny_variant_model, chr20, chr20_seq, tmp_path):
    from genoformer.io.predictions import read_predictions
    from genoformer.predict.runner import PredictConfig, predict

    region = "chr20:10,000,001-10,012,000"
    h5 = tmp_path / "preds.h5"
    predict(PredictConfig(model=str(tiny_variant_model), reference=str(chr20["fasta"]), bam=str(chr20["bam"]),
                          regions=[region], out=str(h5), progress=False, device="cpu"))
    calls = tmp_path / "calls.vcf.gz"
    proc = run_cli("export", h5, "--vcf", calls, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)["vcf"]
    p = read_predictions(h5, region)
    arrays = {"covered": p.covered, "probs": p.probs, "alt": p.alt, "deletion_fraction": p.deletion_fraction}
    want = expected_calls(chr20_seq, p.start, arrays)
    assert_same_calls(read_vcf(calls), want)
    assert summary["records"] == len(want)
    with pysam.VariantFile(str(calls)) as vcf:
        assert list(vcf.header.samples) == ["NA12878"]  # the BAM's SM
    if shutil.which("bcftools"):
        assert subprocess.run(["bcftools", "view", "-H", str(calls)], capture_output=True).returncode == 0
    proc = run_cli("evaluate", "--calls", calls, "--truth-vcf", chr20["vcf"], "--confident-bed", chr20["bed"],
                   "--json", tmp_path / "ev.json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "ev.json").read_text())
    snv = report["snv"]
    assert snv["tp"] + snv["fn"] == 45  # all truth SNVs in the BED lie inside the region
    print(f"tiny model, {region}, confident BED: SNV F1 {snv['f1']}, indel F1 {report['indel']['f1']}, "
          f"{summary['records']} records")


# ---------------------------------------------------------------------------------------------
# export: BED and bedGraph; evaluate: pattern

PATTERN_LENGTHS = {"chrA": 5000, "chrB": 3000}
PATTERN_CLASSES = ["CpG", "repeat"]


def _pattern_arrays(seed=3) -> dict:
    """Piecewise-constant probabilities (runs of equal values) with uncovered gaps."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for contig, n in PATTERN_LENGTHS.items():
        cuts = np.sort(rng.choice(np.arange(1, n), size=n // 60, replace=False))
        values = rng.random((len(cuts) + 1, len(PATTERN_CLASSES)))
        probs = np.repeat(values, np.diff(np.concatenate([[0], cuts, [n]])), axis=0)
        covered = np.ones(n, bool)
        covered[n // 3:n // 3 + 250] = False
        arrays[contig] = {"span": (0, n), "covered": covered, "probs": probs * covered[:, None]}
    return arrays


def numpy_runs(mask: np.ndarray) -> list[tuple[int, int]]:
    padded = np.concatenate([[False], mask, [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def test_bed_and_bedgraph_match_thresholded_runs(tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "BLOCK", 700)
    arrays = _pattern_arrays()
    h5 = tmp_path / "pattern.h5"
    write_predictions(h5, PATTERN_LENGTHS, arrays, task="pattern", classes=PATTERN_CLASSES)
    # outputs into folders that do not exist yet: export makes them, as predict does
    proc = run_cli("export", h5, "--bed", tmp_path / "beds" / "calls.bed.gz", "--bedgraph",
                   tmp_path / "graphs" / "deep" / "p.bedgraph", "--threshold", "0.6", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    want_bed, want_graph = [], {c: [] for c in PATTERN_CLASSES}
    for contig, a in arrays.items():
        probs = a["probs"].astype(np.float16).astype(np.float64)
        rows = []
        for k, name in enumerate(PATTERN_CLASSES):
            for s, e in numpy_runs(a["covered"] & (probs[:, k] >= 0.6)):
                rows.append((s, e, k, contig, name, round(1000 * probs[s:e, k].mean())))
            rounded = np.round(probs[:, k], 2)
            for s, e in numpy_runs(a["covered"]):
                cuts = [s] + [i for i in range(s + 1, e) if rounded[i] != rounded[i - 1]] + [e]
                want_graph[name] += [(contig, x, y, f"{rounded[x]:.2f}") for x, y in zip(cuts[:-1], cuts[1:])]
        want_bed += [(c, s, e, n, str(score), ".") for s, e, k, c, n, score in sorted(rows)]
    with pysam.TabixFile(str(tmp_path / "beds" / "calls.bed.gz")) as tbx:
        got = [tuple(line.split("\t")) for contig in tbx.contigs for line in tbx.fetch(contig)]
    assert [(c, int(s), int(e), n, sc, st) for c, s, e, n, sc, st in got] == want_bed
    assert len(want_bed) > 50
    for name in PATTERN_CLASSES:
        lines = (tmp_path / "graphs" / "deep" / f"p.{name}.bedgraph").read_text().splitlines()
        assert [(c, int(s), int(e), v) for c, s, e, v in (ln.split("\t") for ln in lines)] == want_graph[name]


def test_pattern_auroc_auprc_against_numpy(tmp_path):
    arrays = _pattern_arrays(seed=11)
    h5 = tmp_path / "pattern.h5"
    write_predictions(h5, PATTERN_LENGTHS, arrays, task="pattern", classes=PATTERN_CLASSES)
    rng = np.random.default_rng(1)
    truth = {c: {} for c in PATTERN_CLASSES}
    beds = []
    for name in PATTERN_CLASSES:
        path = tmp_path / f"{name}.bed"
        with open(path, "w") as fh:
            for contig, n in PATTERN_LENGTHS.items():
                mask = np.zeros(n, bool)
                for s in np.sort(rng.choice(n - 200, size=8, replace=False)):
                    e = s + int(rng.integers(20, 200))
                    mask[s:e] = True
                    fh.write(f"{contig}\t{s}\t{e}\n")
                truth[name][contig] = mask
        beds.append(str(path))
    result = evaluate_pattern(PatternEvaluateConfig(predictions=str(h5), tracks=beds))
    for k, name in enumerate(PATTERN_CLASSES):
        scores = np.concatenate([a["probs"][a["covered"], k].astype(np.float16).astype(np.float64)
                                 for a in arrays.values()])
        hits = np.concatenate([truth[name][c][a["covered"]] for c, a in arrays.items()])
        # average precision with ties entering together: precision at each distinct score, weighted by recall gain
        ap = sum(hits[scores >= t].mean() * hits[scores == t].sum() / hits.sum() for t in np.unique(scores))
        score = next(s for s in result.classes if s.name == name)
        assert score.bases == len(scores) and score.positives == hits.sum()
        assert score.auroc == pytest.approx(auroc(hits, scores), abs=1e-12)
        assert score.auprc == pytest.approx(ap, abs=1e-12)


def test_soft_mask_truth_from_the_reference(chr20, tmp_path):
    # the chr20 test reference is not soft-masked: mask stretches of 40 kb of it in a FASTA of our own
    n = 40_000
    with pysam.FastaFile(str(chr20["fasta"])) as fa:
        seq = fa.fetch("chr20", 10_000_000, 10_000_000 + n).upper()
    rng = np.random.default_rng(2)
    lower = np.zeros(n, bool)
    for s in rng.choice(n - 400, size=40, replace=False):
        lower[s:s + int(rng.integers(50, 400))] = True
    fasta = tmp_path / "masked.fa"
    masked = "".join(c.lower() if m else c for c, m in zip(seq, lower))
    fasta.write_text(">chrM1\n" + "\n".join(masked[i:i + 60] for i in range(0, n, 60)) + "\n")
    probs = np.clip(0.3 * lower + 0.7 * rng.random(n), 0, 1)[:, None]  # informative, not perfect
    h5 = tmp_path / "repeats.h5"
    write_predictions(h5, {"chrM1": n}, {"chrM1": {"span": (0, n), "covered": np.ones(n, bool), "probs": probs}},
                      task="pattern", classes=["soft_masked"], reference=str(fasta))
    proc = run_cli("evaluate", "--predictions", h5, "--truth-soft-mask", "--region", "chrM1:10,001-30,000",
                   "--json", tmp_path / "ev.json")
    assert proc.returncode == 0, proc.stderr
    got = json.loads((tmp_path / "ev.json").read_text())["classes"]["soft_masked"]
    scores = probs[10_000:30_000, 0].astype(np.float16).astype(np.float64)
    truth = lower[10_000:30_000]
    assert got["bases"] == 20_000 and got["positives"] == truth.sum() > 1000
    assert got["auroc"] == pytest.approx(auroc(truth, scores), abs=1e-12)
    assert 0.6 < got["auroc"] < 1 and "soft_masked" in proc.stdout


# ---------------------------------------------------------------------------------------------
# bad input through the CLI


def test_bad_inputs_fail_cleanly(chr20, tmp_path):
    arrays = _pattern_arrays()
    good = tmp_path / "good.h5"
    write_predictions(good, PATTERN_LENGTHS, arrays, task="pattern", classes=PATTERN_CLASSES)
    out = tmp_path / "out.bed"

    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[:5000])
    assert_clean_failure(run_cli("export", truncated, "--bed", out), 3, "truncated.h5", "not a readable HDF5")
    incomplete = tmp_path / "incomplete.h5"
    write_predictions(incomplete, PATTERN_LENGTHS, arrays, task="pattern", classes=PATTERN_CLASSES, complete=False)
    assert_clean_failure(run_cli("export", incomplete, "--bed", out), 3, "incomplete.h5", "incomplete")
    assert_clean_failure(run_cli("export", tmp_path / "missing.h5", "--bed", out), 3, "missing.h5")
    assert_clean_failure(run_cli("export", good, "--vcf", tmp_path / "c.vcf.gz"), 2, "variant predictions")
    assert not out.exists() and not (tmp_path / "c.vcf.gz").exists()

    out.write_text("keep me\n")
    assert_clean_failure(run_cli("export", good, "--bed", out), 4, "out.bed", "already exists")
    assert out.read_text() == "keep me\n"
    assert run_cli("export", good, "--bed", out, "--force", "--no-progress").returncode == 0
    assert out.read_text() != "keep me\n"

    other = tmp_path / "other_reference.vcf"
    with pysam.VariantFile(str(chr20["vcf"])) as vcf:
        text = str(vcf.header).replace("ID=chr20,length=63025520", "ID=chr20,length=64444167")
    other.write_text(text)
    assert_clean_failure(run_cli("evaluate", "--calls", other, "--truth-vcf", chr20["vcf"]), 3,
                         "other_reference.vcf", "another reference", "64,444,167")
    assert_clean_failure(run_cli("evaluate", "--calls", tmp_path / "nope.vcf.gz", "--truth-vcf", chr20["vcf"]),
                         3, "nope.vcf.gz")
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert leftovers == []
