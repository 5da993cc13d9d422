"""Track masks against a plain, line-by-line union of the same files' intervals."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from genoformer.errors import RegionError, TrackError
from genoformer.io.fasta import Reference
from genoformer.io.tracks import Tracks

MT, MT_LEN = "MT192765.1", 29_829


def union(path, length, contig, *, columns=(0, 1, 2), one_based=False, feature=None):
    """Bases covered by the file's lines on `contig`, set one interval at a time."""
    covered = np.zeros(length, dtype=bool)
    with open(path) as fh:
        for line in fh:
            f = line.rstrip("\n").split("\t")
            if line.startswith("#") or len(f) < 3 or f[columns[0]] != contig:
                continue
            if feature is not None and f[2] != feature:
                continue
            start, end = int(f[columns[1]]), int(f[columns[2]])
            covered[start - one_based:end] = True
    return covered


@pytest.fixture(scope="module")
def sarscov2(shared_data):
    return shared_data / "sarscov2_mt192765" / "genome"


@pytest.mark.parametrize("name,types", [
    ("genome.gff3", ["transcript", "gene", "CDS"]),
    ("genome.gtf", ["gene", "CDS", "start_codon", "stop_codon"]),
])
def test_gff_and_gtf_masks_equal_union_of_features(sarscov2, name, types):
    tracks = Tracks.from_files([sarscov2 / name], {MT: MT_LEN})
    assert tracks.class_names == types
    mask = tracks.mask(MT, 0, MT_LEN)
    for i, feature in enumerate(types):
        truth = union(sarscov2 / name, MT_LEN, MT, columns=(0, 3, 4), one_based=True, feature=feature)
        np.testing.assert_array_equal(mask[:, i], truth, err_msg=feature)
    assert 29_000 < mask[:, types.index("CDS")].sum() < MT_LEN


def test_feature_types_select_and_order(sarscov2):
    tracks = Tracks.from_files([sarscov2 / "genome.gtf"], feature_types=["CDS", "gene"])
    assert tracks.class_names == ["CDS", "gene"]
    full = Tracks.from_files([sarscov2 / "genome.gtf"]).mask(MT, 0, MT_LEN)
    np.testing.assert_array_equal(tracks.mask(MT, 0, MT_LEN), full[:, [1, 0]])
    with pytest.raises(TrackError, match="no exon features.*found: gene, CDS"):
        Tracks.from_files([sarscov2 / "genome.gtf"], feature_types=["gene", "CDS", "exon"])


def test_primer_and_insert_beds(shared_data):
    artic = shared_data / "sarscov2_artic_v3"
    beds = [artic / "nCoV-2019.primer.bed", artic / "nCoV-2019.insert.bed"]
    tracks = Tracks.from_files(beds, {"MN908947.3": 29_903})
    assert tracks.class_names == ["nCoV-2019.primer", "nCoV-2019.insert"]
    mask = tracks.mask("MN908947.3", 0, 29_903)
    for i, bed in enumerate(beds):
        np.testing.assert_array_equal(mask[:, i], union(bed, 29_903, "MN908947.3"))
    with open(beds[0]) as fh:
        assert sum(1 for _ in fh) == 218


def test_ucsc_table_with_bin_column(shared_data):
    table = shared_data / "annotations_hg19" / "cpg_islands_hg19_ucsc.txt"
    tracks = Tracks.from_files([table], {"chr20": 63_025_520})
    assert tracks.class_names == ["cpg_islands_hg19_ucsc"]
    s, e = 9_995_000, 11_095_000
    truth = union(table, 63_025_520, "chr20", columns=(1, 2, 3))[s:e]
    mask = tracks.mask("chr20", s, e)[:, 0]
    np.testing.assert_array_equal(mask, truth)
    assert np.count_nonzero(np.diff(np.r_[0, mask.astype(int)]) == 1) == 6  # six islands in the window


def test_with_reference(sarscov2):
    ref = Reference(sarscov2 / "genome.fasta")
    tracks = Tracks.from_files([sarscov2 / "genome.gff3"], ref.contigs)
    np.testing.assert_array_equal(tracks.mask(MT, 0, MT_LEN), Tracks.from_files([sarscov2 / "genome.gff3"]).mask(MT, 0, MT_LEN))


def test_subregions_and_empty_contigs(sarscov2):
    tracks = Tracks.from_files([sarscov2 / "genome.gff3"], {MT: MT_LEN, "other": 100})
    full = tracks.mask(MT, 0, MT_LEN)
    for s, e in [(0, 1), (258, 260), (13_000, 21_600), (29_600, MT_LEN), (500, 500)]:
        np.testing.assert_array_equal(tracks.mask(MT, s, e), full[s:e])
    assert tracks.mask("other", 0, 100).shape == (100, 3) and not tracks.mask("other", 0, 100).any()
    with pytest.raises(RegionError, match="'chr1' not found"):
        tracks.mask("chr1", 0, 10)
    with pytest.raises(RegionError, match="past the end"):
        tracks.mask(MT, 0, MT_LEN + 1)


def test_header_lines_gzip_and_same_class_union(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "peaks.bed").write_text("track name=x\nbrowser position c:1-5\n# note\n\nc\t2\t5\tp1\nc\t4\t8\n")
    with gzip.open(tmp_path / "b" / "peaks.bed.gz", "wt") as fh:
        fh.write("c\t10\t12\nc\t10\t10\n")  # a zero-length interval covers nothing
    (tmp_path / "g.gff3").write_text("##gff-version 3\nc\t.\tgene\t1\t3\t.\t+\t.\tID=g\n##FASTA\n>c\nACGT\n")
    tracks = Tracks.from_files([tmp_path / "a" / "peaks.bed", tmp_path / "b" / "peaks.bed.gz", tmp_path / "g.gff3"])
    assert tracks.class_names == ["peaks", "gene"]
    mask = tracks.mask("c", 0, 14)
    assert np.flatnonzero(mask[:, 0]).tolist() == [2, 3, 4, 5, 6, 7, 10, 11]
    assert np.flatnonzero(mask[:, 1]).tolist() == [0, 1, 2]


@pytest.mark.parametrize("name,text,line,match", [
    ("x.bed", "c\t1\t5\nc\t7\n", 2, "at least 3 BED columns"),
    ("x.bed", "c\tone\t5\n", 1, "start 'one' is not an integer"),
    ("x.bed", "c\t1\t5\nc\t9\t3\n", 2, "bad interval 9-3"),
    ("x.bed", "c\t1\t500\n", 1, "past the end of c"),
    ("x.gff3", "c\t.\tgene\t1\t5\t.\t+\n", 1, "expected 9 tab-separated"),
    ("x.gtf", "c\t.\tgene\t10\t5\t.\t+\t.\tx\n", 1, "bad feature coordinates"),
    ("x.gff", "c\t.\tgene\t0\t5\t.\t+\t.\tx\n", 1, "bad feature coordinates"),
    ("x.txt", "chr1\t1\t5\tname\n", 1, "UCSC bin 'chr1' is not an integer"),
])
def test_malformed_lines_name_file_and_line(tmp_path, name, text, line, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(TrackError, match=match) as err:
        Tracks.from_files([path], {"c": 100})
    assert f"{path}:{line}:" in str(err.value) and err.value.exit_code == 3


def test_file_level_errors(tmp_path):
    other = tmp_path / "b37.bed"
    other.write_text("20\t1\t5\n")
    with pytest.raises(TrackError, match="none of its contigs"):
        Tracks.from_files([other], {"chr20": 100})
    assert Tracks.from_files([other], {"chr20": 100, "20": 10}).mask("20", 0, 10)[:, 0].sum() == 4
    for path, match in [(tmp_path / "x.vcf", "unknown annotation format"), (tmp_path / "no.bed", "no such file")]:
        with pytest.raises(TrackError, match=match):
            Tracks.from_files([path])
    binary = tmp_path / "bin.bed.gz"
    binary.write_bytes(b"not gzip at all")
    with pytest.raises(TrackError, match="cannot read as text"):
        Tracks.from_files([binary])
