"""Read evidence against independent pysam computations, plus every malformed-BAM case."""
from __future__ import annotations

import multiprocessing
import pickle

import numpy as np
import pysam
import pytest

import bam_factory as bf
from bam_factory import Read
from fasta_factory import write_fasta
from genoformer.errors import AlignmentError, RegionError, UsageError
from genoformer.io import alignments
from genoformer.io.alignments import EVIDENCE_FEATURES, Alignments, ReadFilters
from genoformer.io.evidence import PILEUP_FEATURES
from genoformer.io.fasta import Reference

CONTIG, START, END = "chr20", 10_000_000, 10_100_000
COL = {name: i for i, name in enumerate(EVIDENCE_FEATURES)}


def fai_lengths(fasta) -> dict[str, int]:
    with open(f"{fasta}.fai") as fh:
        return {f[0]: int(f[1]) for f in (line.split("\t") for line in fh)}


def keeps(read, flag_mask=0x704, min_mapq=0) -> bool:
    return not read.flag & flag_mask and read.mapping_quality >= min_mapq


def pileup_evidence(path, contig, start, end, flag_mask=0x704, min_mapq=0, min_bq=13, reference=None) -> np.ndarray:
    """The same features from htslib's pileup engine, one pileup read at a time; soft clips from the reads' CIGARs.

    `reference`: the region's bases (a str); None counts every base as N (nothing supports it).
    """
    out = np.zeros((end - start, len(EVIDENCE_FEATURES)))
    with pysam.AlignmentFile(str(path)) as bam:
        for col in bam.pileup(contig, start, end, truncate=True, stepper="nofilter", ignore_overlaps=False,
                              ignore_orphans=False, min_base_quality=0, max_depth=1_000_000):
            row = out[col.reference_pos - start]
            ref_base = "N" if reference is None else reference[col.reference_pos - start].upper()
            mapqs, forward, quals, del_lengths, ins_lengths = [], [], [], [], []
            per_base = {b: [] for b in "ACGT"}  # (quality, mapq, forward) of each counted base
            for pr in col.pileups:
                read = pr.alignment
                if not keeps(read, flag_mask, min_mapq) or pr.is_refskip:
                    continue
                mapqs.append(read.mapping_quality)
                forward.append(not read.is_reverse)
                row[COL["deletions"]] += pr.is_del
                if pr.indel > 0:
                    ins_lengths.append(pr.indel)
                elif pr.indel < 0:
                    del_lengths.append(-pr.indel)
                if not pr.is_del:
                    base, q = read.query_sequence[pr.query_position], read.query_qualities[pr.query_position]
                    if base in "ACGT" and q >= min_bq:
                        per_base[base].append((q, read.mapping_quality, not read.is_reverse))
                        quals.append(q)
            depth = len(mapqs)
            row[COL["depth"]] = depth
            for b in "ACGT":
                row[COL[b]] = len(per_base[b])
            row[COL["insertions"]], row[COL["deletion_starts"]] = len(ins_lengths), len(del_lengths)
            if ins_lengths:
                row[COL["mean_insertion_length"]] = np.mean(ins_lengths)
            if del_lengths:
                row[COL["mean_deletion_length"]] = np.mean(del_lengths)
            if mapqs:
                row[COL["mean_mapping_quality"]] = np.mean(mapqs)
                row[COL["forward_fraction"]] = np.mean(forward)
            if quals:
                row[COL["mean_base_quality"]] = np.mean(quals)
            alts = [b for b in "ACGT" if b != ref_base]
            alt = max(alts, key=lambda b: (len(per_base[b]), -"ACGT".index(b)))  # most counted, then ACGT order
            for side, allele in (("ref", ref_base), ("alt", alt)):
                reads = per_base.get(allele, [])
                if reads and depth:
                    row[COL[f"{side}_fraction"]] = len(reads) / depth
                    q, mq, fw = np.mean(reads, axis=0)
                    row[COL[f"{side}_base_quality"]], row[COL[f"{side}_mapping_quality"]] = q, mq
                    row[COL[f"{side}_forward_fraction"]] = fw
        for read in bam.fetch(contig, start, end):
            if not keeps(read, flag_mask, min_mapq):
                continue
            ops = [op for op, _ in read.cigartuples if op != 5]  # hard clips lie outside the soft ones
            for clipped, pos in ((ops[0] == 4, read.reference_start), (ops[-1] == 4, read.reference_end - 1)):
                if clipped and start <= pos < end:
                    out[pos - start, COL["soft_clips"]] += 1
    return out


def assert_evidence_equal(ours: np.ndarray, truth: np.ndarray) -> None:
    for name, i in COL.items():
        np.testing.assert_allclose(ours[:, i], truth[:, i], rtol=1e-6, atol=1e-5, err_msg=name)


# --- tiny hand-made BAM: every CIGAR and filter edge case, checked without the real data ---

TINY_CONTIGS = {"c1": 60, "c2": 30}
TINY_READS = [
    Read("del", "c1", 10, "5M2D3M", "ACGTAGGC", qual=[30, 30, 5, 30, 30, 30, 40, 30]),
    Read("ins", "c1", 12, "3M2I4M", "GTATTGCAA", mapq=20, flag=16),
    Read("clip", "c1", 10, "2S4M", "TTACGT", qual=12),
    Read("skip", "c1", 5, "3M10N3M", "AAACCC"),
    Read("dup", "c1", 10, "8M", "ACGTACGT", flag=0x400),
    Read("lead_ins", "c1", 20, "2I5M", "GGACGTA"),
    Read("del_ins", "c1", 22, "3M1D2I3M", "ACGTTCCA"),
    Read("supp", "c1", 25, "4M", "NNGT", flag=0x800, mapq=7),
    Read("edge", "c1", 55, "5M", "ACGTA"),
    Read("other", "c2", 0, "6M", "ACGTAC"),
    Read("hard_soft", "c2", 10, "3H2S6M1S2H", "TTACGTAAG"),
    Read("ins3", "c2", 11, "4M3I2M", "CGTATTTCG"),
    Read("mismatch", "c2", 12, "6M", "GGAACC", flag=16, mapq=33),
    Read("del_rev", "c2", 14, "2M3D3M", "ACTAC", flag=16, qual=[30, 20, 35, 25, 38]),
    Read("ins_rev", "c2", 15, "3M2I2M4S", "GTATTCTGGGG", flag=16),
]
# a reference for TINY_CONTIGS: mismatches, an N run and soft-masked bases under the reads
TINY_REFERENCE = {"c1": "TTGCAAAGGCACGTACGTCCACGTACGTTTACGTTAGGCATGCAACGTGCATTACGTAGG",
                  "c2": "ACGTACNNGTACGTACGTACgtacGTACGT"}


@pytest.fixture(scope="module")
def tiny_bam(tmp_path_factory):
    reads = sorted(TINY_READS, key=lambda r: (r.contig, r.start))
    return bf.write_bam(tmp_path_factory.mktemp("tiny") / "tiny.bam", TINY_CONTIGS, reads)


@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory):
    assert {c: len(s) for c, s in TINY_REFERENCE.items()} == TINY_CONTIGS
    return Reference(write_fasta(tmp_path_factory.mktemp("tiny_ref") / "tiny.fa", TINY_REFERENCE))


@pytest.mark.parametrize("filters", [ReadFilters(), ReadFilters(min_mapping_quality=10, min_base_quality=0),
                                     ReadFilters(keep_supplementary=False, exclude_flags=0)])
def test_tiny_matches_pileup(tiny_bam, filters):
    ours = Alignments(tiny_bam, TINY_CONTIGS, filters).evidence("c1", 0, 60)
    truth = pileup_evidence(tiny_bam, "c1", 0, 60, filters.flag_mask, filters.min_mapping_quality,
                            filters.min_base_quality)
    assert_evidence_equal(ours, truth)


@pytest.mark.parametrize("contig", ["c1", "c2"])
@pytest.mark.parametrize("filters", [ReadFilters(), ReadFilters(min_mapping_quality=25, min_base_quality=25)])
def test_tiny_against_the_reference_matches_pileup(tiny_bam, tiny_reference, contig, filters):
    n = TINY_CONTIGS[contig]
    ours = Alignments(tiny_bam, tiny_reference, filters).evidence(contig, 0, n)
    truth = pileup_evidence(tiny_bam, contig, 0, n, filters.flag_mask, filters.min_mapping_quality,
                            filters.min_base_quality, reference=TINY_REFERENCE[contig])
    assert truth[:, COL["ref_fraction"]].any() and truth[:, COL["alt_fraction"]].any()
    assert_evidence_equal(ours, truth)


def test_tiny_new_columns_hand_checked(tiny_bam, tiny_reference):
    ev = Alignments(tiny_bam, tiny_reference).evidence("c2", 0, 30)
    at = {name: ev[:, COL[name]] for name in EVIDENCE_FEATURES}
    # hard_soft: 3H2S..1S2H -> clips at its first (10) and last (15) aligned base; ins_rev's 4S at 19
    assert at["soft_clips"].nonzero()[0].tolist() == [10, 15, 19] and at["soft_clips"].sum() == 3
    assert at["insertions"][14] == 1 and at["mean_insertion_length"][14] == 3  # ins3: 4M then 3I
    assert at["insertions"][17] == 1 and at["mean_insertion_length"][17] == 2  # ins_rev: 3M then 2I
    assert at["deletion_starts"].nonzero()[0].tolist() == [15] and at["mean_deletion_length"][15] == 3
    # base 13 (ref T): hard_soft T, ins3 T, mismatch G (reverse, MAPQ 33) -> ref 2/3, alt G 1/3
    assert at["ref_fraction"][13] == pytest.approx(2 / 3) and at["alt_fraction"][13] == pytest.approx(1 / 3)
    assert at["ref_mapping_quality"][13] == 60 and at["ref_forward_fraction"][13] == 1
    assert at["alt_forward_fraction"][13] == 0 and at["alt_mapping_quality"][13] == 33
    # base 15 (ref C): A A (forward MAPQ 60, reverse MAPQ 33), C C (reverse quality 20, forward 30), G -> alt A
    assert at["ref_fraction"][15] == at["alt_fraction"][15] == pytest.approx(2 / 5)
    assert at["ref_base_quality"][15] == 25 and at["ref_forward_fraction"][15] == 0.5
    assert at["alt_mapping_quality"][15] == pytest.approx(46.5)
    # base 6 is N in the reference: no read supports it
    assert at["ref_fraction"][6] == 0 and at["ref_base_quality"][6] == 0


def test_without_a_reference_every_base_counts_as_n(tiny_bam, tiny_reference):
    plain = Alignments(tiny_bam, TINY_CONTIGS).evidence("c2", 0, 30)
    with_ref = Alignments(tiny_bam, tiny_reference).evidence("c2", 0, 30)
    np.testing.assert_array_equal(plain[:, :COL["ref_fraction"]], with_ref[:, :COL["ref_fraction"]])
    assert not plain[:, COL["ref_fraction"]].any()
    counts = plain[:, [COL[b] for b in "ACGT"]]
    np.testing.assert_allclose(plain[:, COL["alt_fraction"]] * plain[:, COL["depth"]], counts.max(1), atol=1e-5)


def test_tiny_hand_checked(tiny_bam):
    ev = Alignments(tiny_bam).evidence("c1", 0, 60)
    depth, dels, ins = ev[:, COL["depth"]], ev[:, COL["deletions"]], ev[:, COL["insertions"]]
    assert depth[8:18].tolist() == [0, 0, 2, 2, 3, 3, 2, 2, 2, 2]  # skip's N gap [8, 18) adds nothing
    assert dels[15:17].tolist() == [1, 1] and dels.sum() == 3     # del's 2D and del_ins' 1D at 25
    assert ins[14] == 1 and ins[25] == 1 and ins.sum() == 2        # after ins' 3M and del_ins' 1D; not lead_ins
    assert ev[12, 1:5].tolist() == [0, 0, 1, 0]                     # ins' G; del's quality-5 G, clip's quality-12 G dropped
    assert ev[10, COL["A"]] == 1 and ev[10, COL["mean_base_quality"]] == 30  # clip's quality-12 A is not counted
    assert ev[13, COL["forward_fraction"]] == pytest.approx(2 / 3)
    assert ev[13, COL["mean_mapping_quality"]] == pytest.approx(140 / 3)


def test_region_edges_and_subregions_agree(tiny_bam):
    al = Alignments(tiny_bam)
    whole = al.evidence("c1", 0, 60)
    np.testing.assert_array_equal(al.evidence("c1", 13, 57), whole[13:57])
    assert al.evidence("c1", 30, 30).shape == (0, len(EVIDENCE_FEATURES))
    assert al.evidence("c2", 0, 30)[:6, COL["depth"]].tolist() == [1] * 6


def test_long_regions_are_split_without_changing_results(tiny_bam, monkeypatch):
    whole = Alignments(tiny_bam).evidence("c1", 0, 60)
    monkeypatch.setattr(alignments, "_MAX_REGION", 7)
    np.testing.assert_array_equal(Alignments(tiny_bam).evidence("c1", 0, 60), whole)


def test_region_errors(tiny_bam):
    al = Alignments(tiny_bam)
    with pytest.raises(RegionError, match="'chr1' not found"):
        al.evidence("chr1", 0, 10)
    with pytest.raises(RegionError, match="past the end of c1"):
        al.evidence("c1", 50, 61)
    with pytest.raises(RegionError):
        al.evidence("c1", 20, 10)
    with pytest.raises(UsageError):
        ReadFilters(min_base_quality=-1)


def test_unsorted_bam_is_refused(tmp_path):
    path = bf.write_bam(tmp_path / "u.bam", TINY_CONTIGS, TINY_READS[::-1], sort_order="unsorted", index=False)
    with pytest.raises(AlignmentError, match="coordinate-sorted") as err:
        Alignments(path)
    assert "samtools sort" in err.value.hint and err.value.exit_code == 3


def test_header_only_bam_gives_zeros(tmp_path):
    path = bf.write_bam(tmp_path / "empty.bam", TINY_CONTIGS, [])
    assert not Alignments(path).evidence("c1", 0, 60).any()


# --- the real chr20 BAM ---

@pytest.fixture(scope="module")
def chr20_bam(chr20):
    return Alignments(chr20["bam"], fai_lengths(chr20["fasta"]))


@pytest.mark.parametrize("min_mapq,min_bq", [(0, 13), (30, 25)])
def test_acgt_equals_count_coverage_over_100kb(chr20, chr20_bam, min_mapq, min_bq):
    filters = ReadFilters(min_mapping_quality=min_mapq, min_base_quality=min_bq)
    ours = Alignments(chr20["bam"], chr20_bam.reference_contigs, filters).evidence(CONTIG, START, END)
    with pysam.AlignmentFile(str(chr20["bam"])) as bam:
        truth = np.array(bam.count_coverage(CONTIG, START, END, quality_threshold=min_bq,
                                            read_callback=lambda r: keeps(r, 0x704, min_mapq))).T
    assert truth.sum() > 4_000_000  # the whole region is covered
    np.testing.assert_array_equal(ours[:, 1:5], truth)


@pytest.mark.parametrize("min_mapq", [0, 30])
def test_depth_equals_samtools_depth(chr20, chr20_bam, min_mapq):
    filters = ReadFilters(min_mapping_quality=min_mapq)
    ours = Alignments(chr20["bam"], filters=filters).evidence(CONTIG, START, END)[:, COL["depth"]]
    text = pysam.samtools.depth("-a", "-J", "-Q", str(min_mapq), "-r", f"{CONTIG}:{START + 1}-{END}",
                                str(chr20["bam"]))
    truth = np.array([int(line.split("\t")[2]) for line in text.splitlines()])
    assert len(truth) == END - START
    np.testing.assert_array_equal(ours, truth)


def test_all_features_equal_pileup_on_indel_rich_window(chr20):
    s, e = 10_004_000, 10_009_000  # holds truth deletions at 10,004,769 and 10,006,819, insertion at 10,008,029
    ours = Alignments(chr20["bam"], Reference(chr20["fasta"])).evidence(CONTIG, s, e)
    with pysam.FastaFile(str(chr20["fasta"])) as fa:
        reference = fa.fetch(CONTIG, s, e)
    truth = pileup_evidence(chr20["bam"], CONTIG, s, e, reference=reference)
    assert truth[:, COL["deletions"]].sum() > 50 and truth[:, COL["insertions"]].sum() > 10
    assert truth[:, COL["deletion_starts"]].sum() > 20 and truth[:, COL["soft_clips"]].sum() > 10
    assert (truth[:, COL["alt_fraction"]] > 0.3).sum() >= 3  # the het and hom-alt sites
    assert_evidence_equal(ours, truth)


def test_extra_bam_contigs_are_allowed_but_reference_contigs_must_match(chr20, tmp_path):
    lengths = fai_lengths(chr20["fasta"])
    assert Alignments(chr20["bam"], lengths).contigs["chr1"] == 249_250_621  # hg19 header, chr20-only FASTA
    with pytest.raises(AlignmentError) as err:
        Alignments(chr20["bam"], {"chr20": lengths["chr20"] + 1, "chrUn": 5})
    msg = str(err.value)
    assert str(chr20["bam"]) in msg and "63,025,521 bp in the reference but 63,025,520" in msg
    assert "chrUn missing from the BAM" in msg

    renamed = bf.rewrite_header(chr20["bam"], tmp_path / "renamed.bam", rename={"chr20": "20", "chrM": "MT"})
    with pytest.raises(AlignmentError, match=r"chr20 missing from the BAM \(BAM has 20\)"):
        Alignments(renamed, lengths)
    assert Alignments(renamed).evidence("20", START, START + 1000).any()


def test_contig_check_with_reference_names_both_files(chr20, shared_data):
    ours = Alignments(chr20["bam"], Reference(chr20["fasta"])).evidence(CONTIG, START, START + 500)
    plain = Alignments(chr20["bam"]).evidence(CONTIG, START, START + 500)  # ref/alt columns compare against N
    np.testing.assert_array_equal(ours[:, :len(PILEUP_FEATURES)], plain[:, :len(PILEUP_FEATURES)])
    other = Reference(shared_data / "sarscov2_mt192765" / "genome" / "genome.fasta")
    with pytest.raises(AlignmentError, match="MT192765.1 missing from the BAM") as err:
        Alignments(chr20["bam"], other)
    assert str(chr20["bam"]) in str(err.value) and str(other.path) in str(err.value)


@pytest.mark.parametrize("make,match", [
    (lambda s, d: bf.truncate(s, d), "truncated"),
    (lambda s, d: bf.strip_eof(s, d), "truncated"),
    (lambda s, d: bf.without_index(s, d), "no index"),
])
def test_broken_bams_fail_at_open(chr20, tmp_path, make, match):
    path = make(chr20["bam"], tmp_path / "broken.bam")
    with pytest.raises(AlignmentError, match=match) as err:
        Alignments(path)
    assert str(path) in str(err.value) and err.value.exit_code == 3
    if match == "no index":
        assert err.value.hint == f"samtools index {path}"


def test_byte_flipped_bam_names_the_file(chr20, tmp_path):
    path = bf.flip_bytes(chr20["bam"], tmp_path / "flipped.bam")
    al = Alignments(path)  # the header and index are intact
    with pytest.raises(AlignmentError, match=r"corrupt near chr20:") as err:
        al.evidence(CONTIG, START, END)
    assert str(path) in str(err.value)
    assert al.evidence(CONTIG, START, START + 100).any()  # a fresh handle reads the intact part


@pytest.mark.parametrize("name,content", [("zero.bam", b""), ("fasta.bam", b">chr20\nACGT\n")])
def test_not_a_bam(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(AlignmentError, match="empty file|FASTA") as err:
        Alignments(path)
    assert str(path) in str(err.value)


def test_other_formats_given_as_bam(chr20, tmp_path):
    for path in (chr20["fasta"], chr20["vcf"], tmp_path / "missing.bam"):
        with pytest.raises(AlignmentError, match="not a BAM|no such file") as err:
            Alignments(path)
        assert str(path) in str(err.value)


def _evidence_in_child(al):
    return al.evidence(CONTIG, START, START + 2000)


def test_handle_reopens_after_pickle_and_fork(chr20_bam):
    before = chr20_bam.evidence(CONTIG, START, START + 2000)
    clone = pickle.loads(pickle.dumps(chr20_bam))
    assert clone._handle is None
    np.testing.assert_array_equal(clone.evidence(CONTIG, START, START + 2000), before)
    with multiprocessing.get_context("fork").Pool(1) as pool:
        np.testing.assert_array_equal(pool.apply(_evidence_in_child, (chr20_bam,)), before)


# --- CRAM ---

def test_cram_matches_bam(shared_data, tmp_path):
    genome = shared_data / "sarscov2_mt192765" / "genome" / "genome.fasta"
    bam = shared_data / "sarscov2_mt192765" / "illumina" / "bam" / "test_paired_end.sorted.bam"
    cram = tmp_path / "reads.cram"
    with pysam.AlignmentFile(str(bam)) as src, \
            pysam.AlignmentFile(str(cram), "wc", template=src, reference_filename=str(genome)) as out:
        for read in src.fetch(until_eof=True):
            out.write(read)
    pysam.index(str(cram))

    ref = Reference(genome)
    expected = Alignments(bam, ref).evidence("MT192765.1", 0, 29_829)
    assert expected[:, COL["depth"]].sum() > 10_000
    np.testing.assert_array_equal(Alignments(cram, ref).evidence("MT192765.1", 0, 29_829), expected)
    with pytest.raises(AlignmentError, match="CRAM needs its reference"):
        Alignments(cram)
