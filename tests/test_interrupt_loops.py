"""Every long loop checks for a SIGTERM whose SystemExit was swallowed (genoformer.interrupt).

Python runs the SIGTERM handler at the next bytecode; when that lands in a finalizer, its
SystemExit is lost and only the recorded flag is left. Each loop below (over FASTA chunks, contig
checksums, covered masks, VCF records, reference chunks, BED/GFF lines, training chunks) must then
stop at its first check with exit code 143. The loops of train, predict, merge and export steps,
windows and blocks are covered by tests/predict/test_predict.py and tests/test_interrupt.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from genoformer import interrupt
from genoformer.coords import Interval

import fasta_factory


@pytest.fixture
def terminated(monkeypatch):
    """As after a SIGTERM whose SystemExit a finalizer swallowed."""
    monkeypatch.setattr(interrupt, "_terminated", True)


@pytest.fixture
def fasta(tmp_path):
    path = tmp_path / "toy.fa"
    fasta_factory.write_fasta(path, fasta_factory.toy_records())
    return path


def _stops(call) -> None:
    with pytest.raises(SystemExit) as stop:
        call()
    assert stop.value.code == interrupt.EXIT_CODE


def test_fasta_scan_checks(fasta, terminated):
    from genoformer.io.fasta import Reference

    _stops(lambda: Reference(fasta))


def test_reference_loops_check(fasta, monkeypatch):
    from genoformer.info import _sequence_counts
    from genoformer.io.checksums import contig_md5
    from genoformer.io.fasta import Reference

    ref = Reference(fasta)  # scanned before the flag is set
    monkeypatch.setattr(interrupt, "_terminated", True)
    _stops(lambda: contig_md5(ref, "chr1"))
    _stops(lambda: _sequence_counts(ref, Interval("chr1", 0, 250), None))


def test_covered_mask_scan_checks(terminated):
    from genoformer.io.predictions import covered_runs

    _stops(lambda: covered_runs(np.ones(10, bool)))


def test_vcf_record_loop_checks(tmp_path, terminated):
    from genoformer.evaluate.callsets import read_callset

    path = tmp_path / "calls.vcf"
    path.write_text("##fileformat=VCFv4.2\n##contig=<ID=c1,length=100>\n"
                    '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
                    "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\tS1\n"
                    "c1\t5\t.\tA\tG\t.\tPASS\t.\tGT\t0/1\n")
    _stops(lambda: read_callset(path))


def test_track_lines_check(tmp_path, terminated):
    from genoformer.io.tracks import Tracks

    bed = tmp_path / "cpg.bed"
    bed.write_text("chr1\t0\t10\n")
    _stops(lambda: Tracks.from_files([bed], {"chr1": 250}))


def test_genotype_count_chunks_check(terminated):
    from genoformer.train.labels import class_counts

    _stops(lambda: class_counts(None, [Interval("chr1", 0, 10)], None))


def test_bam_writing_checks(tmp_path, terminated):
    from genoformer.simulate.reads import write_bam

    seqs = {"c1": np.frombuffer(b"ACGT" * 250, np.uint8)}
    p = dict(read_length=50, coverage=2.0, insert_mean=150, insert_sd=10)
    _stops(lambda: write_bam(tmp_path / "r.bam", np.random.default_rng(0), seqs, [], p, sample="S",
                             command_line="genoformer simulate"))
