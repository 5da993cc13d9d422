"""Every bad input, through the real `genoformer` process: one line naming the file and the
problem on stderr (plus an optional `hint:` line), the contract's exit code, no traceback.

The checklist of RELIABILITY.md §3, row by row, and the test that holds each ("here": this file;
BAD_INPUTS is the htslib faidx.tst-style table of case, command, exit code and message).

| row | fault                                  | tested by                                                        |
|-----|----------------------------------------|------------------------------------------------------------------|
| A1  | FASTA missing (any input: exit 3)      | here: test_a_missing_input_is_bad_input_data (every command)     |
| A2  | zero bytes, no '>'                     | here: test_malformed_fasta[empty_file, no_header]                |
| A3  | text before '>', binary, plain gzip    | here: test_malformed_fasta[no_header, binary, plain_gzip]        |
| A4  | duplicate names                        | here: test_malformed_fasta[duplicate_names]                      |
| A5  | line lengths, blank line in a record   | here: test_malformed_fasta; io/test_fasta: every perturbed line  |
| A6  | CR-only (CRLF accepted)                | here: [cr_only]; io/test_fasta: test_fetch_equals_the_written_.. |
| A7  | spaces or tabs in sequence lines       | here: test_malformed_fasta[tab_in_sequence, space_in_sequence]   |
| A8  | empty record                           | io/test_fasta: test_empty_record*                                |
| A9  | empty header                           | here: test_malformed_fasta[empty_header]                         |
| A10 | header with a description              | test_parser_fuzz: test_fasta_headers_and_lines (first token)     |
| A11 | soft-masking                           | test_tokenize: test_soft_mask_marks_lowercase                    |
| A12 | IUPAC, U, gaps                         | test_tokenize: test_dna_encode_matches_reference_for_every_...   |
| A13 | N runs, all-N windows                  | model/test_reformer: test_all_padding_is_finite; predict N cache |
| A14 | stale .fai                             | io/test_fasta: test_stale_index_is_never_read                    |
| A15 | .fai in a read-only folder             | io/test_fasta: test_index_goes_to_the_private_cache_in_a_read_.. |
| A16 | two jobs index one FASTA               | io/test_fasta: test_index_beside_the_fasta_is_complete_and_at..  |
| A17 | protein given as DNA                   | here: test_protein_given_as_dna_for_tokenising                   |
| A18 | window past the contig end             | data/test_datasets: test_last_window_of_a_contig_is_padded_...   |
| B1  | truncated, no EOF block                | here: test_bad_bam[truncate, strip_eof]                          |
| B2  | corrupt mid-file; another BAM's index  | here: test_corrupt_bam_names_the_file; BAD_INPUTS "B2 ..."       |
| B3  | no index                               | here: test_bad_bam[without_index]                                |
| B4  | index older than the BAM               | here: BAD_INPUTS "B4 ..."                                        |
| B5  | @SQ vs FASTA                           | here: test_bad_bam[rewrite_header]; io/test_alignments           |
| B6  | not a BAM                              | here: test_fasta_given_as_bam; io/test_alignments: test_not_a_.. |
| B7  | unsorted (header says sorted)          | here: BAD_INPUTS "B7 ..."; io/test_alignments: test_unsorted_..  |
| B8  | header only                            | io/test_alignments: test_header_only_bam_gives_zeros             |
| B9  | CRAM without / with another reference  | io/test_alignments: test_cram_matches_bam; BAD_INPUTS "B9 ..."   |
| B10 | handles across DataLoader workers      | data/test_datasets: test_dataloader_workers_give_identical_...   |
| C1  | region syntax, start > end             | here: test_bad_regions, BAD_INPUTS "C1 ..."; test_coords         |
| C2  | contig not in the FASTA                | here: test_bad_regions                                           |
| C3  | region past the contig end             | here: test_bad_regions (no --clip: always an error)              |
| C4  | 1-based strings vs 0-based inside      | test_coords: test_region_string_round_trip; test_parser_fuzz     |
| C5  | overlapping BED intervals              | test_coords: test_merge_covers_the_same_bases_once               |
| D1  | unknown key, wrong type, not UTF-8     | train/test_recipes, train/test_config; BAD_INPUTS "D1 ..."       |
| D2  | violated model invariant               | model/test_reformer: test_bad_configs_raise_usage_error          |
| D3  | checkpoint vs config at predict        | predict/test_predict: test_bad_inputs_fail_cleanly (from ckpt)   |
| D4  | --device cuda without CUDA             | test_devices: test_cuda_without_a_gpu_is_a_usage_error_in_...    |
| D5  | --help without torch                   | here: test_help_and_info_never_import_torch                      |
| E1  | pickle payload                         | model/test_checkpoint: test_a_pickle_payload_in_the_state_is_..  |
| E2  | truncated or corrupt checkpoint        | model/test_checkpoint; train/test_loop: test_bad_input_through.. |
| E3  | NaN in weights                         | model/test_reformer: test_load_rejects_damaged_checkpoints       |
| E4  | kill during a save                     | model/test_checkpoint: test_a_failed_save_leaves_...; SIGKILL    |
| E5  | disk full during a save                | cli/test_full_disk: test_train_on_a_full_disk                    |
| E6  | exact resume                           | train/test_loop: test_sigkill_then_...; train/test_run_folder    |
| E7  | --resume of nothing                    | here: BAD_INPUTS "E7 ..."                                        |
| F1  | output exists                          | predict/test_predict: test_bad_inputs_fail_cleanly; test_merge   |
| F2  | SIGKILL mid-write                      | predict/test_predict: test_sigterm_sigkill_then_resume_...       |
| F3  | disk full                              | cli/test_full_disk (predict, merge, buckets, export, train)      |
| F4  | incomplete files refused               | predict/test_predict: test_readers_refuse_incomplete_...         |
| F5  | non-finite predictions                 | predict/test_predict (exit 5); BAD_INPUTS "F5 ..." (a file: 3)   |
| F6  | two writers                            | predict/test_predict: test_sigterm_sigkill_then_resume (second)  |
| F7  | provenance                             | predict/test_predict: test_schema_provenance_and_read_evidence   |
| F8  | resumable predict                      | predict/test_predict: test_sigterm_sigkill_then_resume_...       |
| F*  | damaged predictions files              | cli/test_hdf5_fuzz (export, merge); BAD_INPUTS "F ..."           |
| G1  | Ctrl-C                                 | here: test_sigint_exits_130_...; train/test_run_folder (resume)  |
| G2  | SIGTERM                                | test_interrupt, test_interrupt_loops; predict SIGTERM test       |
| G3  | SIGKILL                                | as F2 and E6                                                     |
| G4  | CUDA out of memory                     | here: test_gpu_out_of_memory_is_an_output_error (raised by hand) |
| G5  | exception in a DataLoader worker       | here: test_a_worker_error_keeps_its_type_and_message             |
| G6  | a batch job fails as a whole           | test_workflow: test_a_failing_shard_fails_the_run_and_leaves_... |
| H1  | fp16 masks                             | model/test_attention: test_half_precision_masks_stay_finite      |
| H2  | hashing precision                      | model/test_lsh: test_bf16_autocast_keeps_buckets_and_stays_...   |
| H3  | all-masked chunk                       | model/test_lsh: test_all_padding_is_finite_with_finite_gradients |
| H4  | non-finite loss                        | here: BAD_INPUTS "H4 ..."                                        |
| H5  | reversible recompute                   | model/test_reversible                                            |
| H6  | autocast in the recompute              | model/test_reversible: test_autocast_state_is_replayed_in_...    |
| I1  | LSH at inference                       | predict/test_predict: test_same_hash_seed_same_file_contents_... |
| I2  | training seeds                         | train/test_loop: resume tests (same losses)                      |
| I3  | batch size and workers                 | predict/test_predict (batch 16 vs 7); data/test_datasets         |
| I4  | window offset                          | predict/test_predict: test_no_seams_region_alone_equals_...      |
| I5  | buckets determinism                    | buckets/test_buckets: test_same_seed_same_files_other_seed_...   |
| J1  | a rule's job fails                     | test_workflow: test_a_failing_shard_fails_the_run_and_leaves_... |
| J2  | Snakemake killed                       | not tested: killing Snakemake tests Snakemake; F2 holds for us   |
| J3  | wrapper contract                       | test_workflow: test_run_end_to_end_then_noop_then_one_shard      |
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pysam
import pytest

import bam_factory
import fasta_factory


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.run([sys.executable, "-m", "genoformer", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


LOG_LINES = ("INFO: ", "WARNING: ")  # progress and warnings logged before an error are not the error


def assert_clean_failure(proc: subprocess.CompletedProcess, code: int, *needles: str) -> None:
    assert proc.returncode == code, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith(LOG_LINES)]
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


# ---------------------------------------------------------------------------------------------
# The table: one row per case, each built in its own folder from real files.

CHR20_REGION = "chr20:10,000,001-10,100,000"


@dataclass
class Case:
    row: str  # RELIABILITY.md §3
    args: Callable  # (tmp_path, fixture) -> genoformer arguments; fixture(name) gives a pytest fixture
    code: int
    match: str  # regex the `error:` line matches


def _info_bam(make: Callable) -> Callable:
    def args(tmp, fixture):
        chr20 = fixture("chr20")
        return ["info", "--reference", chr20["fasta"], "--bam", make(chr20["bam"], tmp), "--region", CHR20_REGION]
    return args


def _stale_index(src: Path, tmp: Path) -> Path:
    bam = bam_factory.with_index_of(src, src, tmp / "stale.bam")
    later = os.stat(f"{bam}.bai").st_mtime + 10
    os.utime(bam, (later, later))  # the BAM rewritten after it was indexed
    return bam


def _cram_on_another_reference(tmp: Path, fixture) -> list:
    """A CRAM written against one FASTA, read with another of the same names and lengths."""
    records = fasta_factory.toy_records(1)
    reads = [bam_factory.Read(f"r{i}", "chr1", s, "50M", records["chr1"][s:s + 50].upper().replace("N", "A"))
             for i, s in enumerate(range(0, 190, 7))]
    fasta_factory.write_fasta(tmp / "a.fa", records)
    other = dict(records, chr1=records["chr1"][:20] + ("C" if records["chr1"][20] != "C" else "G")
                 + records["chr1"][21:])
    fasta_factory.write_fasta(tmp / "b.fa", other)
    bam = bam_factory.write_bam(tmp / "r.bam", {n: len(s) for n, s in records.items()}, reads)
    pysam.view("-C", "-T", str(tmp / "a.fa"), "-o", str(tmp / "r.cram"), str(bam), catch_stdout=False)
    pysam.index(str(tmp / "r.cram"))
    return ["info", "--reference", tmp / "b.fa", "--bam", tmp / "r.cram"]


def _truth_vcf(tmp: Path, chr20: dict, name: str, record: str) -> Path:
    """An indexed one-sample VCF on hg19 chr20 holding `record` (tab-separated, from POS on)."""
    path = tmp / name
    path.write_text("##fileformat=VCFv4.2\n##contig=<ID=chr20,length=63025520>\n"
                    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
                    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\n"
                    f"chr20\t{record}\n")
    return Path(pysam.tabix_index(str(path), preset="vcf", force=True))


def _base_at_10000100(chr20: dict) -> str:
    with pysam.FastaFile(str(chr20["fasta"])) as fa:
        return fa.fetch("chr20", 10_000_099, 10_000_100).upper()


def _wrong_ref_vcf(tmp: Path, chr20: dict) -> Path:
    base = _base_at_10000100(chr20)
    wrong = "ACGT"[("ACGT".index(base) + 1) % 4]
    return _truth_vcf(tmp, chr20, "wrong_ref.vcf", f"10000100\t.\t{wrong}\t{base}\t.\tPASS\t.\tGT\t0/1")


def _missing_alt_vcf(tmp: Path, chr20: dict) -> Path:
    base = _base_at_10000100(chr20)
    alt = "ACGT"[("ACGT".index(base) + 1) % 4]
    return _truth_vcf(tmp, chr20, "gt.vcf", f"10000100\t.\t{base}\t{alt}\t.\tPASS\t.\tGT\t0/3")


def _train(chr20: dict, tmp: Path, *extra) -> list:
    return ["train", "--reference", chr20["fasta"], "--train-regions", CHR20_REGION, "--window", 256, "--k", 3,
            "--d-model", 16, "--depth", 1, "--heads", 1, "--attention", "full", "--batch-size", 1,
            "--no-progress", "--out", tmp / "run", *extra]


def _damaged_predictions(damage: Callable) -> Callable:
    def args(tmp, fixture):
        import shutil

        import h5py

        path = tmp / "damaged.h5"
        shutil.copyfile(fixture("tiny_predictions"), path)
        with h5py.File(path, "r+") as f:
            damage(f["contigs/chr20"])
        return ["export", path, "--vcf", tmp / "calls.vcf.gz", "--no-progress"]
    return args


def _nan_probs(g) -> None:
    import numpy as np

    probs = g["variant/probs"]
    block = probs[10_000_100:10_000_110]
    block[:] = np.nan
    probs[10_000_100:10_000_110] = block


BAD_INPUTS = {
    "B2 another BAM's index": Case("B2", _info_bam(lambda src, tmp: bam_factory.with_index_of(
        src, bam_factory.every_nth_read(src, tmp / "other.bam"), tmp / "mixed.bam")), 3,
        r"mixed\.bam: its index mixed\.bam\.bai was not built for this file"),
    "B4 index older than the BAM": Case("B4", _info_bam(_stale_index), 3,
                                        r"stale\.bam: its index stale\.bam\.bai is older than the file"),
    "B7 shuffled, header says sorted": Case("B7", _info_bam(lambda src, tmp: bam_factory.shuffled(
        src, tmp / "shuffled.bam")), 3, r"shuffled\.bam: not coordinate-sorted although its header says "
                                        r"SO:coordinate: read \S+ at chr20:[\d,]+ comes after"),
    "B9 CRAM on another reference": Case("B9", _cram_on_another_reference, 3,
                                         r"r\.cram: CRAM was written against another reference than \S*b\.fa: "
                                         r"chr1 has M5"),
    "C1 region ending before it starts": Case("C1", lambda tmp, fixture: _train(
        fixture("chr20"), tmp, "--max-steps", 1, "--dry-run")[:4] + ["chr20:10,000,003-10,000,002"]
        + _train(fixture("chr20"), tmp, "--max-steps", 1, "--dry-run")[5:], 3,
        r"start 10,000,003 is after end 10,000,002"),
    "D1 recipe not UTF-8": Case("D1", lambda tmp, fixture: (
        (tmp / "r.yaml").write_bytes(b"task: mlm\n# caf\xe9\n"),
        ["train", "--config", tmp / "r.yaml", "--dry-run"])[1], 2, r"r\.yaml: line 2: byte 0xe9 is not UTF-8"),
    "E7 resume of nothing": Case("E7", lambda tmp, fixture: ["train", "--resume", tmp / "nowhere"], 3,
                                 r"nowhere: no such run"),
    "H4 non-finite loss": Case("H4", lambda tmp, fixture: _train(
        fixture("chr20"), tmp, "--max-steps", 4, "--lr", "1e20", "--warmup-steps", 0), 5,
        r"training loss is nan at step"),
    "VCF REF is not the reference's (info)": Case("B5", lambda tmp, fixture: [
        "info", "--reference", fixture("chr20")["fasta"], "--vcf", _wrong_ref_vcf(tmp, fixture("chr20")),
        "--region", CHR20_REGION], 3, r"wrong_ref\.vcf\.gz: REF [ACGT] at chr20:10000100 does not match \S+ \([ACGT]\)"),
    "VCF REF is not the reference's (train)": Case("B5", lambda tmp, fixture: _train(
        fixture("chr20"), tmp, "--task", "variant", "--bam", fixture("chr20")["bam"], "--truth-vcf",
        _wrong_ref_vcf(tmp, fixture("chr20")), "--max-steps", 1, "--dry-run"), 3,
        r"wrong_ref\.vcf\.gz: REF [ACGT] at chr20:10000100 does not match"),
    "VCF GT names a missing ALT": Case("B5", lambda tmp, fixture: [
        "info", "--reference", fixture("chr20")["fasta"], "--region", CHR20_REGION, "--vcf",
        _missing_alt_vcf(tmp, fixture("chr20"))], 3,
        r"gt\.vcf\.gz: record chr20:10000100: GT 0/3 names allele 3 but the record has 1 ALT allele \([ACGT]\)"),
    "F5 NaN probabilities in a predictions file": Case("F5", _damaged_predictions(_nan_probs), 3,
                                                       r"damaged\.h5: .*variant/probs at chr20:10,000,101 is nan"),
    "F missing dataset": Case("F4", _damaged_predictions(lambda g: g.__delitem__("variant/probs")), 3,
                              r"damaged\.h5: /contigs/chr20: missing dataset variant/probs"),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_input_table(name, tmp_path, request):
    case = BAD_INPUTS[name]
    proc = run_cli(*case.args(tmp_path, request.getfixturevalue))
    assert_clean_failure(proc, case.code, case.match)


def test_run_folder_on_a_read_only_file_system(small_disk, chr20):
    """An output folder that cannot be created is exit 4, not a crash (was exit 1)."""
    disk = small_disk("64k", "ro")
    proc = run_cli(*_train(chr20, disk, "--max-steps", 1))
    assert_clean_failure(proc, 4, r"run: cannot create or lock the run folder \(Read-only file system\)")


def test_class_names_that_are_no_file_names(tiny_predictions, tmp_path):
    """GFF feature types become class names ('five/prime UTR'); their bedGraph files get safe names."""
    import shutil

    import h5py
    import numpy as np

    path = tmp_path / "pattern.h5"
    shutil.copyfile(tiny_predictions, path)
    with h5py.File(path, "r+") as f:
        f.attrs["task"] = "pattern"
        g = f["contigs/chr20"]
        g.move("variant/probs", "pattern/probs")
        g["pattern/probs"].attrs["classes"] = ["CDS", "five/prime UTR", "x"]
    proc = run_cli("export", path, "--bedgraph", tmp_path / "p.bedgraph", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    names = sorted(p.name for p in tmp_path.glob("p.*.bedgraph"))
    assert names == ["p.CDS.bedgraph", "p.five_prime_UTR.bedgraph", "p.x.bedgraph"]
    with h5py.File(path) as f:  # the bedGraph holds the class's probabilities (rounded to 2 digits)
        probs = f["contigs/chr20/pattern/probs"][10_000_000:10_030_000, 1].astype(np.float64)
    rows = [line.split("\t") for line in (tmp_path / "p.five_prime_UTR.bedgraph").read_text().splitlines()
            if not line.startswith("track")]
    first = rows[0]
    assert first[0] == "chr20" and int(first[1]) == 10_000_000
    assert float(first[3]) == pytest.approx(round(probs[0], 2), abs=0.006)


def test_help_and_info_never_import_torch():
    """D5: `genoformer --help`, `info` and the help of the commands run without the torch stack (fast; no GPU
    libraries needed), `train --help` too although it shows TrainConfig's defaults."""
    code = ("import sys; from genoformer.cli import main\n"
            "for argv in (['--help'], ['info', '--help'], ['export', '--help'], ['train', '--help']):\n"
            "    try: main(argv)\n"
            "    except SystemExit: pass\n"
            "print('torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2])))
    assert proc.stdout.strip().splitlines()[-1] == "False", proc.stdout + proc.stderr


def test_sigint_exits_130_and_keeps_the_partial(tiny_pattern_model, chr20, tmp_path):
    """G1: Ctrl-C ends predict with 130 and one line; the partial stays for --resume, nothing at --out."""
    from genoformer.io.predictions import partial_path

    out = tmp_path / "p.h5"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.Popen([sys.executable, "-m", "genoformer", "predict", "--model", str(tiny_pattern_model),
                             "--reference", str(chr20["fasta"]), "--region", "chr20:10,000,001-10,300,000",
                             "--window", "384", "--margin", "96", "--batch-size", "1", "--no-progress",
                             "--out", str(out)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while not partial_path(out).exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert proc.poll() is None, "predict finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert [ln for ln in stderr.splitlines() if ln.startswith("error:")] == ["error: interrupted"], stderr
    assert "Traceback" not in stderr and partial_path(out).exists() and not out.exists()


def test_gpu_out_of_memory_is_an_output_error(tiny_pattern_model, chr20, tmp_path, monkeypatch):
    """G4: CUDA running out of memory (raised here by the model, as no GPU is needed) is exit 4 with a hint,
    and leaves no output."""
    import torch

    from genoformer.errors import OutputError
    from genoformer.model.heads import GenoModel
    from genoformer.predict.runner import PredictConfig, predict

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(GenoModel, "forward", out_of_memory)
    with pytest.raises(OutputError, match="GPU out of memory") as err:
        predict(PredictConfig(model=str(tiny_pattern_model), reference=str(chr20["fasta"]), out=str(tmp_path / "p.h5"),
                              regions=["chr20:10,000,001-10,002,000"], progress=False))
    assert err.value.exit_code == 4 and "--batch-size" in err.value.hint
    assert list(tmp_path.iterdir()) == []


def test_a_worker_error_keeps_its_type_and_message(chr20, tmp_path):
    """G5: a DataLoader worker that meets a corrupt BAM re-raises AlignmentError naming the file and the
    place, not "worker exited unexpectedly"."""
    import torch

    from genoformer.data.datasets import WindowDataset
    from genoformer.data.windows import tile
    from genoformer.errors import AlignmentError
    from genoformer.io.alignments import Alignments
    from genoformer.io.fasta import Reference
    from genoformer.coords import Interval
    from genoformer.tokenize import KmerTokenizer

    bam = bam_factory.flip_bytes(chr20["bam"], tmp_path / "flipped.bam", at=0.6)
    ref = Reference(chr20["fasta"])
    windows = tile([Interval("chr20", 10_000_000, 10_100_000)], 20_000, contig_lengths=ref.contigs)
    dataset = WindowDataset(ref, windows, KmerTokenizer(3), alignments=Alignments(bam, ref))
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=1)
    with pytest.raises(AlignmentError, match=r"flipped\.bam: BAM corrupt near chr20:"):
        for _ in loader:
            pass
