"""Every bad input, through the real `genoformer` process: one line naming the file and the
problem on stderr (plus an optional `hint:` line), the contract's exit code, no traceback."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pysam
import pytest

import bam_factory
import fasta_factory


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.run([sys.executable, "-m", "genoformer", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


def assert_clean_failure(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("error:", "Error:"))]
    assert len(errors) == 1, proc.stderr
    assert all(ln.startswith(("error:", "Error:", "hint:", "Usage:", "Try ")) for ln in lines), proc.stderr
    for needle in needles:
        assert re.search(needle, errors[0]), (needle, errors[0])


FASTA_CASES = ["empty_file", "no_header", "duplicate_names", "short_line", "long_line", "blank_line_inside",
               "cr_only", "tab_in_sequence", "space_in_sequence", "plain_gzip", "binary", "empty_header",
               "bam_as_fasta", "bam_given_as_reference"]


@pytest.mark.parametrize("case", FASTA_CASES)
def test_malformed_fasta(tmp_path, case):
    bad = getattr(fasta_factory, case)(tmp_path)
    proc = run_cli("info", "--reference", bad.path)
    assert_clean_failure(proc, 3, re.escape(bad.path.name), bad.match)
    if bad.line is not None:
        assert re.search(rf"\bline {bad.line}\b|lines [0-9, and]*\b{bad.line}\b", proc.stderr), proc.stderr


# one missing input per command: every command reads its files through commands/paths.py
MISSING_INPUT = {
    "info": ["info", "--reference", "{missing}"],
    "train": ["train", "--task", "mlm", "--reference", "{missing}"],
    "predict": ["predict", "--model", "{missing}", "--reference", "{missing}", "--out", "{tmp}/p.h5"],
    "export": ["export", "{missing}", "--vcf", "{tmp}/c.vcf.gz"],
    "evaluate": ["evaluate", "--calls", "{missing}", "--truth-vcf", "{missing}"],
    "merge": ["merge", "{tmp}/a.h5", "--out", "{tmp}/m.h5", "--expect-regions", "{missing}"],
    "buckets": ["buckets", "--model", "{missing}", "--reference", "{missing}", "--region", "c:1-2",
                "--out", "{tmp}/b"],
}


@pytest.mark.parametrize("command", sorted(MISSING_INPUT))
def test_a_missing_input_is_bad_input_data(tmp_path, command):
    missing = tmp_path / "nope.fa"
    args = [a.format(missing=missing, tmp=tmp_path) for a in MISSING_INPUT[command]]
    proc = run_cli(*args)
    assert_clean_failure(proc, 3, "nope.fa: no such (file|folder)")
    assert not missing.exists() and not any(tmp_path.iterdir())  # nothing written


def test_a_folder_given_as_an_input_file(tmp_path):
    assert_clean_failure(run_cli("info", "--reference", tmp_path), 3, "is a folder, expected a file")


def test_protein_given_as_dna_for_tokenising(tmp_path):
    bad = fasta_factory.protein_as_dna(tmp_path)
    proc = run_cli("info", "--reference", bad.path, "--k", "6")
    assert_clean_failure(proc, 3, re.escape(bad.path.name), "protein")


@pytest.mark.parametrize("k", ["0", "9"])
def test_k_out_of_range(chr20, k):
    proc = run_cli("info", "--reference", chr20["fasta"], "--region", "chr20:10,000,001-10,001,000", "--k", k)
    assert_clean_failure(proc, 2, "k")


@pytest.mark.parametrize("region, code, needle", [
    ("chr21:1-100", 3, "chr21"),
    ("20:1-100", 3, "chr20"),               # close names are suggested
    ("chr20:200-100", 2, "start"),
    ("chr20:63,025,000-63,025,600", 3, "63,025,520"),
    ("chr20:abc-100", 2, "chr20:abc-100"),
])
def test_bad_regions(chr20, region, code, needle):
    proc = run_cli("info", "--reference", chr20["fasta"], "--region", region)
    assert_clean_failure(proc, code, needle)


@pytest.mark.parametrize("make, needle", [
    (lambda src, dst: bam_factory.without_index(src, dst), "index"),
    (lambda src, dst: bam_factory.truncate(src, dst), "truncated"),
    (lambda src, dst: bam_factory.strip_eof(src, dst), "truncated"),
    (lambda src, dst: bam_factory.rewrite_header(src, dst, rename={"chr20": "20"}), "chr20"),
])
def test_bad_bam(chr20, tmp_path, make, needle):
    bad = make(chr20["bam"], tmp_path / "bad.bam")
    proc = run_cli("info", "--reference", chr20["fasta"], "--bam", bad,
                   "--region", "chr20:10,000,001-10,100,000")
    assert_clean_failure(proc, 3, "bad.bam", needle)


def test_corrupt_bam_names_the_file(chr20, tmp_path):
    bad = bam_factory.flip_bytes(chr20["bam"], tmp_path / "flipped.bam")
    proc = run_cli("info", "--reference", chr20["fasta"], "--bam", bad, "--region", "chr20:10,000,001-10,100,000")
    assert_clean_failure(proc, 3, "flipped.bam")


def test_fasta_given_as_bam(chr20, tmp_path):
    proc = run_cli("info", "--reference", chr20["fasta"], "--bam", chr20["fasta"])
    assert_clean_failure(proc, 3, "unittest.fasta.gz", "not a BAM")


def _vcf_on_another_reference(path: Path) -> Path:
    header = pysam.VariantHeader()
    header.contigs.add("chr20", length=64_444_167)  # hg38's chr20, not hg19's 63,025,520
    header.add_meta("FORMAT", items=[("ID", "GT"), ("Number", 1), ("Type", "String"), ("Description", "Genotype")])
    header.add_sample("S1")
    plain = path.with_suffix("")
    with pysam.VariantFile(str(plain), "w", header=header) as out:
        rec = out.new_record(contig="chr20", start=10_000_100, alleles=("A", "G"))
        rec.samples["S1"]["GT"] = (0, 1)
        out.write(rec)
    return Path(pysam.tabix_index(str(plain), preset="vcf", force=True))


def test_vcf_on_another_reference(chr20, tmp_path):
    vcf = _vcf_on_another_reference(tmp_path / "hg38.vcf.gz")
    proc = run_cli("info", "--reference", chr20["fasta"], "--vcf", vcf)
    assert_clean_failure(proc, 3, "hg38.vcf", "another reference")


def test_unknown_option_is_a_usage_error(chr20):
    proc = run_cli("info", "--reference", chr20["fasta"], "--no-such-option")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
