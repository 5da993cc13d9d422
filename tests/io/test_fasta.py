"""Reference FASTA: fetches against pysam, Biopython and the written sequence; every malformed input
of RELIABILITY.md §3 A gives one clean FastaError line; index files are never stale or half-written."""
from __future__ import annotations

import lzma
import multiprocessing as mp
import os
import pickle
import re
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyfaidx
import pysam
import pytest
from Bio import SeqIO

import fasta_factory as ff
from genoformer.coords import Interval
from genoformer.errors import FastaError, OutputError, RegionError, UsageError
from genoformer.io import fasta_scan
from genoformer.io.fasta import Reference

TOY = ff.toy_records()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A private cache per test, so no test sees another's scans or indexes."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "genoformer" / "fasta"


def fai_lengths(path) -> dict[str, int]:
    rows = [line.split("\t") for line in Path(f"{path}.fai").read_text().splitlines()]
    return {r[0]: int(r[1]) for r in rows}


def text(seq: np.ndarray) -> str:
    assert seq.dtype == np.uint8 and seq.ndim == 1
    return seq.tobytes().decode("ascii")


@contextmanager
def read_only(folder: Path):
    """Make `folder` really unwritable: chmod for ordinary users, the immutable flag for root."""
    folder.chmod(0o555)
    immutable = False
    try:
        if os.access(folder, os.W_OK):  # root ignores permission bits
            immutable = subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode == 0
            if not immutable:
                pytest.skip("cannot make a folder read-only here (root without chattr +i)")
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
        folder.chmod(0o755)


# -- real data ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sarscov2(shared_data) -> Path:
    return shared_data / "sarscov2_mt192765" / "genome" / "genome.fasta"


def test_contigs_equal_the_fai(chr20, sarscov2):
    for path in (chr20["fasta"], sarscov2):
        ref = Reference(path)
        assert ref.contigs == fai_lengths(path)
        assert ref.index_path == Path(f"{path}.fai")  # the existing index matched the scan, so it is used
    # the .gzi computed by the scan is byte-for-byte htslib's
    assert Reference(chr20["fasta"]).gzi_path == Path(f"{chr20['fasta']}.gzi")


def test_fetch_equals_pysam_and_region_strings(chr20, sarscov2):
    rng = np.random.default_rng(0)
    for path in (chr20["fasta"], sarscov2):
        ref = Reference(path)
        (contig, length), = ref.contigs.items()
        regions = [(0, length), (0, 1), (length - 1, length)] if length < 100_000 else [
            (9_995_000, 10_995_000),  # 1 Mb of real sequence
            (9_994_000, 9_996_000),  # N run into sequence
            (length - 500, length)]
        starts = rng.integers(0, length - 1, 20)
        regions += [(int(s), int(min(length, s + rng.integers(1, 5_000)))) for s in starts]
        with pysam.FastaFile(str(path)) as fa:
            for start, end in regions:
                expected = fa.fetch(contig, start, end)
                assert text(ref.fetch(contig, start, end)) == expected
                iv = ref.region(f"{contig}:{start + 1:,}-{end:,}")  # 1-based inclusive string
                assert iv == Interval(contig, start, end)
                assert text(ref.fetch_interval(iv)) == fa.fetch(region=f"{contig}:{start + 1}-{end}") == expected
    n_run = Reference(chr20["fasta"]).fetch("chr20", 9_994_000, 9_996_000)
    assert (n_run == ord("N")).any() and (n_run != ord("N")).any()


def test_protein_fasta(shared_data, tmp_path, sarscov2):
    src = shared_data / "protein" / "cb513" / "CB513.fasta"
    path = Path(shutil.copy(src, tmp_path))  # indexing writes a .fai beside it; keep shared/data untouched
    ref = Reference(path, alphabet="protein")
    records = list(SeqIO.parse(path, "fasta"))
    assert ref.contigs == {r.id: len(r.seq) for r in records}
    for r in records[::50]:
        assert text(ref.fetch(r.id, 0, len(r.seq))) == str(r.seq)
    with pytest.raises(FastaError, match=r"alphabet looks like protein \(\d+\.\d% of residues are not ACGTN"):
        Reference(path, alphabet="dna")
    assert Reference(path, alphabet="any").contigs == ref.contigs
    with pytest.raises(FastaError, match=r"alphabet looks like DNA \(100\.0% of residues are ACGTUN\)"):
        Reference(sarscov2, alphabet="protein")
    with pytest.raises(UsageError, match="unknown alphabet 'rna'"):
        Reference(path, alphabet="rna")


# -- written toy genomes --------------------------------------------------------------------------


@pytest.mark.parametrize("bgzip,width,newline", [(False, 60, "\n"), (False, 7, "\r\n"), (True, 60, "\n"),
                                                 (True, 13, "\r\n")])
def test_fetch_equals_the_written_sequence(tmp_path, bgzip, width, newline):
    path = ff.write_fasta(tmp_path / ("toy.fa.gz" if bgzip else "toy.fa"), TOY, width, newline, bgzip)
    ref = Reference(path)
    assert ref.contigs == {name: len(seq) for name, seq in TOY.items()}
    rng = np.random.default_rng(1)
    for _ in range(100):
        contig = str(rng.choice(list(TOY)))
        start, end = sorted(rng.integers(0, len(TOY[contig]) + 1, 2).tolist())
        seq = ref.fetch(contig, start, end)
        assert text(seq) == TOY[contig][start:end]  # soft-masking (case), N and IUPAC codes kept
    with pysam.FastaFile(str(path)) as fa:  # htslib reads the index genoformer wrote
        assert all(fa.fetch(c) == s for c, s in TOY.items())


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_no_newline_at_the_end(tmp_path, newline):
    path = tmp_path / "toy.fa"
    path.write_bytes(ff.format_fasta(TOY, newline=newline).removesuffix(newline.encode()))
    ref = Reference(path)
    assert all(text(ref.fetch(c, 0, len(s))) == s for c, s in TOY.items())
    with pysam.FastaFile(str(path)) as fa:
        assert all(fa.fetch(c) == s for c, s in TOY.items())


def test_out_of_range_is_an_error_never_clipped(tmp_path):
    ref = Reference(ff.write_fasta(tmp_path / "toy.fa", TOY))
    for start, end, match in [(240, 251, r"runs past the end of chr1 \(250 bp\)"), (-1, 5, "past the end"),
                              (251, 260, "past the end"), (9, 8, "start 10 is after end 8")]:
        with pytest.raises(RegionError, match=match) as err:
            ref.fetch("chr1", start, end)
        assert str(ref.path) in str(err.value) and err.value.exit_code == 3
    with pytest.raises(RegionError, match=r"contig '1' not found \(did you mean chr1\?\)"):
        ref.fetch("1", 0, 5)
    with pytest.raises(RegionError, match="past the end"):
        ref.region("chr1:1-251")
    assert ref.fetch("chr1", 250, 250).size == 0


def test_context_manager_and_numpy_coordinates(tmp_path):
    with Reference(ff.write_fasta(tmp_path / "toy.fa", TOY)) as ref:
        assert text(ref.fetch("chr2", np.int64(3), np.uint32(9))) == TOY["chr2"][3:9]
        with pytest.raises(TypeError):
            ref.fetch("chr2", 3.0, 9)
    assert ref._handle is None


@pytest.mark.parametrize("n", [0, 1, 2, 7, 4096])
def test_byte_histogram_equals_bincount(n):
    data = np.random.default_rng(n).integers(0, 256, n + 1, dtype=np.uint8)
    for a in (data[:n], data[1:]):  # aligned and unaligned
        assert fasta_scan._histogram(a).tolist() == np.bincount(a, minlength=256).tolist()


# -- malformed input ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ff.MALFORMED))
def test_malformed_fasta_is_one_clean_error(tmp_path, name):
    bad = ff.MALFORMED[name](tmp_path)
    with pytest.raises(FastaError, match=bad.match) as err:
        Reference(bad.path)
    msg = str(err.value)
    assert msg.startswith(f"{bad.path}: ") and "\n" not in msg and err.value.exit_code == 3
    if bad.line is not None:
        assert re.search(rf"\bline {bad.line}\b|and {bad.line}\)", msg), msg
    assert not Path(f"{bad.path}.fai").exists()  # nothing indexed from a bad file


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(FastaError, match="no such file"):
        Reference(tmp_path / "nope.fa")
    with pytest.raises(FastaError, match="is a directory"):
        Reference(tmp_path)


def test_every_perturbed_line_is_reported(tmp_path):
    """pyfaidx's test_valgrind_* idea: break each sequence line in turn; the error names that line."""
    data = ff.format_fasta(TOY)
    Reference(ff.write_fasta(tmp_path / "ok.fa", TOY))  # the unperturbed file is fine
    cases = 0
    for line, contig, i, n in ff.sequence_lines(TOY):
        kinds = ["tab", "space", "cr"] + (["short", "long", "blank"] if i < n - 1 else [])  # a short last line is fine
        for kind in kinds:
            path = tmp_path / f"{kind}{line}.fa"
            path.write_bytes(ff.mutate_line(data, line, kind))
            with pytest.raises(FastaError, match=rf"at line {line}\b") as err:
                Reference(path)
            assert (contig in str(err.value)) or kind in ("tab", "space", "cr")
            cases += 1
    assert cases == 51


def test_other_compression_formats(tmp_path):
    xz = tmp_path / "toy.fa.xz"
    xz.write_bytes(lzma.compress(ff.format_fasta(TOY)))
    with pytest.raises(FastaError, match="xz-compressed"):
        Reference(xz)
    bgz = ff.write_fasta(tmp_path / "toy.fa.gz", TOY, bgzip=True)
    with pytest.raises(FastaError, match="does not end in .gz or .bgz"):
        Reference(bgz.rename(tmp_path / "toy.fasta"))
    with pytest.raises(FastaError, match="named like a compressed file but is not compressed"):
        Reference(ff.write_fasta(tmp_path / "plain.fa.gz", TOY))


def test_truncated_bgzip(tmp_path):
    data = ff.write_fasta(tmp_path / "toy.fa.gz", TOY, bgzip=True).read_bytes()
    no_eof, half = tmp_path / "noeof.fa.gz", tmp_path / "half.fa.gz"
    no_eof.write_bytes(data[:-28])
    half.write_bytes(data[:len(data) // 2])
    with pytest.raises(FastaError, match="truncated \\(no bgzip end-of-file block\\)"):
        Reference(no_eof)
    with pytest.raises(FastaError, match="corrupt or truncated bgzip block at byte 0"):
        Reference(half)


def test_empty_records_are_excluded_with_a_warning(tmp_path, caplog):
    path = ff.empty_records(tmp_path)
    ref = Reference(path)
    assert ref.contigs == {"b": 11, "d": 4} and ref.empty_contigs == ["a", "c"]
    assert "excluding 2 records without sequence: 'a' (line 1), 'c' (line 7)" in caplog.text
    with pytest.raises(RegionError, match="'a' has no sequence"):
        ref.fetch("a", 0, 0)
    with pytest.raises(FastaError, match="records without sequence: 'a' \\(line 1\\)"):
        Reference(path, strict=True)
    only_empty = tmp_path / "only.fa"
    only_empty.write_bytes(b">a\n>b\n")
    with pytest.raises(FastaError, match="records without sequence"):
        Reference(only_empty)


@pytest.mark.parametrize("builder", ["htslib", "pyfaidx"])
def test_empty_record_result_does_not_depend_on_the_indexing_tool(tmp_path, builder):
    """htslib leaves an empty record out of the .fai, pyfaidx lists it with length 0 (§2.1)."""
    path = tmp_path / "mid.fa"
    path.write_bytes(b">a\n>b\nACGTACGT\nACG\n>d\nGGGG\n")
    pysam.faidx(str(path)) if builder == "htslib" else pyfaidx.Faidx(str(path)).close()
    built = Path(f"{path}.fai").read_bytes()
    ref = Reference(path)
    assert ref.contigs == {"b": 11, "d": 4} and ref.empty_contigs == ["a"]
    assert ref.index_path == Path(f"{path}.fai") and ref.index_path.read_bytes() == built
    assert text(ref.fetch("b", 0, 11)) == "ACGTACGTACG"


# -- index files ----------------------------------------------------------------------------------


@pytest.mark.parametrize("bgzip", [False, True])
def test_stale_index_is_never_read(tmp_path, cache, caplog, bgzip):
    path = tmp_path / ("ref.fa.gz" if bgzip else "ref.fa")
    ff.write_fasta(path, TOY, bgzip=bgzip)
    Reference(path)
    old_fai = Path(f"{path}.fai").read_bytes()
    big = "".join(np.random.default_rng(2).choice(list("ACGT"), 150_000))  # several bgzip blocks
    new = {"chr1": TOY["chr2"], "chrX": big}
    ff.write_fasta(path, new, width=50, bgzip=bgzip)  # rewritten after indexing
    ref = Reference(path)
    assert "does not match" in caplog.text and "stale" in caplog.text
    assert ref.contigs == {n: len(s) for n, s in new.items()}
    assert all(text(ref.fetch(n, 0, len(s))) == s for n, s in new.items())
    assert Path(f"{path}.fai").read_bytes() == old_fai  # the user's file is left alone
    assert ref.index_path.parent == cache and (not bgzip or ref.gzi_path.parent == cache)


def test_index_goes_to_the_private_cache_in_a_read_only_folder(tmp_path, cache):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = ff.write_fasta(folder / "toy.fa", TOY)
    with read_only(folder):
        ref = Reference(path)
        assert not Path(f"{path}.fai").exists() and ref.index_path.parent == cache
        assert text(ref.fetch("chr2", 0, 181)) == TOY["chr2"]
        assert Reference(path).index_path == ref.index_path
        assert not list(cache.glob(".*"))  # no temp file left behind


def test_no_writable_place_for_the_index_is_an_output_error(tmp_path, monkeypatch):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = ff.write_fasta(folder / "toy.fa", TOY)
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))  # cannot be created
    with read_only(folder):
        with pytest.raises(OutputError, match=f"{path}: cannot write its .fai index") as err:
            Reference(path)
    assert err.value.exit_code == 4 and "XDG_CACHE_HOME" in err.value.hint


def test_index_beside_the_fasta_is_complete_and_atomic(tmp_path):
    path = ff.write_fasta(tmp_path / "toy.fa", TOY)
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else pytest.skip("needs fork")
    procs = [ctx.Process(target=Reference, args=(path,)) for _ in range(4)]  # race to build one index
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0] * 4
    assert sorted(f.name for f in tmp_path.iterdir()) == ["toy.fa", "toy.fa.fai", "xdg"]  # no temp file left
    pysam.faidx(str(path), "--fai-idx", str(tmp_path / "htslib.fai"))
    assert Path(f"{path}.fai").read_bytes() == (tmp_path / "htslib.fai").read_bytes()


def test_scan_is_cached_by_size_and_mtime(tmp_path, monkeypatch):
    path = ff.write_fasta(tmp_path / "toy.fa", TOY)
    Reference(path)

    class NoScan:
        def __init__(self, path):
            raise AssertionError(f"{path} was scanned again")

    monkeypatch.setattr(fasta_scan, "_Scanner", NoScan)
    assert Reference(path).contigs["chr1"] == 250  # from the cache
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    with pytest.raises(AssertionError, match="scanned again"):
        Reference(path)


def test_handles_are_per_process(tmp_path):
    ref = Reference(ff.write_fasta(tmp_path / "toy.fa.gz", TOY, bgzip=True))
    expected = text(ref.fetch("chr1", 90, 200))  # the parent's handle is open now
    clone = pickle.loads(pickle.dumps(ref))
    assert clone._handle is None and text(clone.fetch("chr1", 90, 200)) == expected
    if "fork" not in mp.get_all_start_methods():
        pytest.skip("needs fork")
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_fetch_in_child, args=(ref, queue))  # inherited, not pickled
    child.start()
    got = queue.get(timeout=30)
    child.join(30)
    assert got == (True, expected)
    assert text(ref.fetch("chr1", 90, 200)) == expected  # the parent's handle was not disturbed


def _fetch_in_child(ref: Reference, queue) -> None:
    handle = ref._handle
    seq = text(ref.fetch("chr1", 90, 200))
    queue.put((ref._handle is not handle, seq))


# -- library behaviour the guards above work around (RELIABILITY.md §2.1, §6) ---------------------
# If one of these fails after an upgrade, the library changed and the matching guard may be redundant.


def test_pin_pyfaidx_loses_contigs_with_cr_only_endings(tmp_path):
    path = ff.cr_only(tmp_path).path
    with pyfaidx.Fasta(str(path)) as fa:
        assert {k: len(v) for k, v in fa.items()} != {"chr1": 12, "chr2": 4}


def test_pin_htslib_reads_garbage_through_a_stale_index(tmp_path):
    path = ff.write_fasta(tmp_path / "ref.fa", {"chr1": "A" * 12, "chr2": "C" * 8})
    pysam.faidx(str(path))
    ff.write_fasta(path, {"chr1": "G" * 4, "chr2": "T" * 20})
    with pysam.FastaFile(str(path)) as fa:
        assert fa.fetch("chr1") != "GGGG"
