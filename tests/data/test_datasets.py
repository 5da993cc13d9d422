"""WindowDataset items against pysam and plain file reads; DataLoader workers; the random-window sampler."""
from __future__ import annotations

import numpy as np
import pysam
import pytest
import torch
from torch.utils.data import DataLoader

from genoformer.coords import Interval, read_bed
from genoformer.data.datasets import IGNORE_INDEX, WindowDataset
from genoformer.data.samplers import RandomWindowSampler
from genoformer.errors import FastaError, UsageError
from genoformer.io.alignments import EVIDENCE_FEATURES, Alignments
from genoformer.io.fasta import Reference
from genoformer.io.tracks import Tracks
from genoformer.io.variants import TruthVariants
from genoformer.tokenize import KmerTokenizer
from genoformer.data.windows import Window, tile

CHR20_BAM_SPAN = Interval("chr20", 10_000_000, 10_100_000)


@pytest.fixture(scope="module")
def chr20_sources(chr20, shared_data):
    ref = Reference(chr20["fasta"])
    cpg = shared_data / "annotations_hg19" / "cpg_islands_hg19_ucsc.txt"
    return {
        "reference": ref,
        "alignments": Alignments(chr20["bam"], ref),
        "variants": TruthVariants(chr20["vcf"], ref),
        "tracks": Tracks.from_files([cpg, chr20["bed"]], ref.contigs),
        "confident": read_bed(chr20["bed"], ref.contigs),
        "cpg": cpg,
    }


def union_of_lines(path, contig, start, end, columns):
    """Per-base coverage of [start, end) by the file's intervals, one line at a time."""
    covered = np.zeros(end - start, dtype=bool)
    for line in open(path):
        f = line.split("\t")
        if len(f) > max(columns) and f[columns[0]] == contig:
            covered[max(int(f[columns[1]]) - start, 0):max(int(f[columns[2]]) - start, 0)] = True
    return covered


def test_items_match_pysam_and_the_files(chr20, chr20_sources):
    src = chr20_sources
    tok = KmerTokenizer(6)
    # the window holding the confident regions and the first CpG island (10,015,610-10,015,914)
    w = Window("chr20", 10_000_000, 10_020_000, 20_000)
    ds = WindowDataset(src["reference"], [w], tok, src["alignments"], src["variants"], src["tracks"],
                       src["confident"])
    item = ds[0]
    assert (item["contig"], item["start"], item["n_valid"]) == ("chr20", w.start, w.n_valid)
    seq = pysam.FastaFile(str(chr20["fasta"])).fetch("chr20", w.start, w.end)
    assert item["tokens"].tolist() == tok.encode(seq).tolist()
    assert item["token_mask"].all() and item["valid"].all()
    assert tok.decode(item["tokens"].numpy(), len(seq)) == seq.upper()
    assert item["soft_mask"].tolist() == [c.islower() for c in seq]

    with pysam.AlignmentFile(str(chr20["bam"])) as bam:
        acgt = np.array(bam.count_coverage("chr20", w.start, w.end, quality_threshold=13, read_callback="all")).T
    assert item["evidence"].dtype == torch.float32 and item["evidence"].shape == (len(w), len(EVIDENCE_FEATURES))
    cols = [EVIDENCE_FEATURES.index(b) for b in "ACGT"]
    assert (item["evidence"][:, cols].numpy() == acgt).all() and acgt.sum() > 100_000

    confident = union_of_lines(chr20["bed"], "chr20", w.start, w.end, (0, 1, 2))
    assert ((item["genotype"] != IGNORE_INDEX).numpy() == confident).all()
    assert ((item["variant_type"] != IGNORE_INDEX).numpy() == confident).all()
    n_snvs = 0
    for rec in pysam.VariantFile(str(chr20["vcf"])).fetch("chr20", w.start, w.end):
        gt = rec.samples[0]["GT"]
        if len(rec.ref) == 1 and all(len(a) == 1 for a in rec.alts) and gt in ((0, 1), (1, 0), (1, 1)):
            expected = sum(gt) if confident[rec.start - w.start] else IGNORE_INDEX
            assert item["genotype"][rec.start - w.start] == expected
            n_snvs += confident[rec.start - w.start]
    assert n_snvs > 10

    cpg = union_of_lines(src["cpg"], "chr20", w.start, w.end, (1, 2, 3))
    assert src["tracks"].class_names[0] == "cpg_islands_hg19_ucsc" and cpg.sum() == 10_015_914 - 10_015_610
    assert (item["tracks"].numpy() == np.stack([cpg, confident], axis=1)).all()


def test_last_window_of_a_contig_is_padded_not_clipped(shared_data):
    genome = shared_data / "sarscov2_mt192765" / "genome"
    ref = Reference(genome / "genome.fasta")
    bam = Alignments(shared_data / "sarscov2_mt192765/illumina/bam/test_paired_end.sorted.bam", ref)
    tracks = Tracks.from_files([genome / "genome.gff3"], ref.contigs, feature_types=["CDS"])
    tok = KmerTokenizer(4, 3)
    windows = tile(None, 4096, contig_lengths=ref.contigs)
    assert [w.n_valid for w in windows] == [4096] * 7 + [29_829 - 7 * 4096]
    ds = WindowDataset(ref, windows, tok, alignments=bam, tracks=tracks)
    last, n = ds[len(ds) - 1], windows[-1].n_valid
    n_real_tokens = tok.n_tokens(n)
    assert last["tokens"].shape == (tok.n_tokens(4096),)
    assert (last["tokens"][n_real_tokens:] == tok.pad_id).all() and (last["tokens"][:n_real_tokens] > 3).all()
    assert last["token_mask"].tolist() == [True] * n_real_tokens + [False] * (tok.n_tokens(4096) - n_real_tokens)
    assert last["valid"].sum() == n and not last["valid"][n:].any() and not last["soft_mask"][n:].any()
    assert (last["evidence"][n:] == 0).all() and last["evidence"][:n, 0].sum() > 0
    assert (last["tracks"][n:] == 0).all()
    seq = pysam.FastaFile(str(genome / "genome.fasta")).fetch("MT192765.1", windows[-1].start, 29_829)
    assert tok.decode(last["tokens"][last["token_mask"]].numpy(), n) == seq.upper()
    batch = next(iter(DataLoader(ds, batch_size=8)))
    assert batch["tokens"].shape == (8, tok.n_tokens(4096)) and batch["n_valid"].tolist()[-1] == n


def test_dataloader_workers_give_identical_batches(chr20_sources):
    src = chr20_sources
    windows = tile([CHR20_BAM_SPAN], 8192, 6000, src["reference"].contigs)
    ds = WindowDataset(src["reference"], windows, KmerTokenizer(6), src["alignments"], src["variants"],
                       src["tracks"], src["confident"])
    serial = list(DataLoader(ds, batch_size=4, num_workers=0))
    parallel = list(DataLoader(ds, batch_size=4, num_workers=2))
    assert len(serial) == len(parallel) == -(-len(windows) // 4)
    for a, b in zip(serial, parallel):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == b[key] if key == "contig" else torch.equal(a[key], b[key]), key


def test_bad_character_names_the_window(tmp_path):
    fasta = tmp_path / "gaps.fa"
    fasta.write_text(">x\nACGTACGT-ACGT\n")
    ds = WindowDataset(Reference(fasta, alphabet="any"), tile(None, 8, contig_lengths={"x": 13}), KmerTokenizer(2))
    assert ds[0]["n_valid"] == 8
    with pytest.raises(FastaError, match=r"gaps.fa: window x:9-13: .*'-' at offset 0"):
        ds[1]


def test_dataset_checks_its_arguments(tmp_path):
    fasta = tmp_path / "a.fa"
    fasta.write_text(">x\nACGTACGTAC\n")
    ref = Reference(fasta)
    with pytest.raises(UsageError, match="one size"):
        WindowDataset(ref, [Window("x", 0, 4, 4), Window("x", 4, 10, 6)], KmerTokenizer(2))
    with pytest.raises(UsageError, match="variants"):
        WindowDataset(ref, [], KmerTokenizer(2), confident=[Interval("x", 0, 5)])


LENGTHS = {"a": 130, "b": 3}


def sampler(num_samples=50, seed=7, **kw):
    return RandomWindowSampler([Interval("a", 0, 10), Interval("a", 100, 130), Interval("b", 0, 3)], 5,
                               num_samples, seed=seed, contig_lengths=LENGTHS, **kw)


def test_sampler_is_uniform_over_possible_windows():
    windows = list(sampler(num_samples=33_000))
    possible = [("a", s) for s in range(0, 6)] + [("a", s) for s in range(100, 126)] + [("b", 0)]
    counts = {p: 0 for p in possible}
    for w in windows:
        counts[(w.contig, w.start)] += 1  # KeyError for a window outside the intervals
        assert len(w) == 5 and w.n_valid == (3 if w.contig == "b" else 5)
    observed = np.array(list(counts.values()))
    chi2 = ((observed - 1000) ** 2 / 1000).sum()
    assert chi2 < 62.5  # the chi-square 99.9% quantile for 33 - 1 = 32 degrees of freedom


def test_sampler_is_seeded_and_advances_epochs():
    first = list(sampler(seed=7))
    assert first == list(sampler(seed=7)) and first != list(sampler(seed=8))
    s = sampler()
    assert list(s) == first and s.epoch == 1
    second = list(s)
    other = sampler()
    other.set_epoch(1)
    assert second != first and second == list(other)


def test_sampler_resumes_after_consumed_items():
    full = list(sampler())
    s = sampler()
    it = iter(s)
    head = [next(it) for _ in range(17)]
    assert head == full[:17] and s.state_dict() == {"seed": 7, "epoch": 0, "consumed": 17}
    resumed = sampler()
    resumed.load_state_dict(s.state_dict())
    assert list(resumed) == full[17:] and resumed.state_dict() == {"seed": 7, "epoch": 1, "consumed": 0}
    trainer_count = sampler()
    trainer_count.load_state_dict({"seed": 7, "epoch": 0, "consumed": 40})
    assert list(trainer_count) == full[40:]
    with pytest.raises(UsageError, match="seed"):
        sampler().load_state_dict({"seed": 1, "epoch": 0, "consumed": 0})
    with pytest.raises(UsageError, match="consumed"):
        sampler().load_state_dict({"seed": 7, "consumed": 51})


def test_sampler_feeds_a_dataloader(chr20_sources):
    src = chr20_sources
    s = RandomWindowSampler([CHR20_BAM_SPAN], 2048, 6, seed=3)
    ds = WindowDataset(src["reference"], [], KmerTokenizer(3), src["alignments"])
    batches = list(DataLoader(ds, batch_size=3, sampler=s))
    windows = list(RandomWindowSampler([CHR20_BAM_SPAN], 2048, 6, seed=3))
    assert [start for b in batches for start in b["start"].tolist()] == [w.start for w in windows]
    assert all(CHR20_BAM_SPAN.start <= w.start <= CHR20_BAM_SPAN.end - 2048 for w in windows)
    assert batches[0]["evidence"].shape == (3, 2048, len(EVIDENCE_FEATURES))


@pytest.mark.parametrize("kw", [{"num_samples": 0}, {"window": 0}])
def test_sampler_rejects_bad_sizes(kw):
    args = {"intervals": [Interval("a", 0, 10)], "window": 5, "num_samples": 3} | kw
    with pytest.raises(UsageError):
        RandomWindowSampler(**args)
