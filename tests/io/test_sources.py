"""The per-base source contract: each source against its own reader, and pickled into a spawned process."""
from __future__ import annotations

import multiprocessing
import pickle

import numpy as np
import pytest

from genoformer.coords import Interval, IntervalSet, read_bed
from genoformer.errors import RegionError
from genoformer.io.alignments import EVIDENCE_FEATURES, Alignments, Evidence
from genoformer.io.fasta import Reference
from genoformer.io.sources import UNSCORED, LazyHandle, PerBaseSource
from genoformer.io.tracks import Tracks
from genoformer.io.variants import LABEL_DTYPE, TruthVariants

# bases 10,000,001-10,020,000: reads, GIAB calls and the confident BED's first intervals
WINDOW = Interval("chr20", 10_000_000, 10_020_000)


@pytest.fixture(scope="module")
def sources(chr20):
    ref = Reference(chr20["fasta"])
    confident = read_bed(chr20["bed"], ref.contigs)
    return {"reference": ref, "alignments": Alignments(chr20["bam"], ref),
            "truth": TruthVariants(chr20["vcf"], ref).scored_in(confident),
            "tracks": Tracks.from_files([chr20["bed"]], ref.contigs)}


def test_every_source_answers_per_base_with_one_row_per_base(sources, chr20):
    ref, bam, truth, tracks = (sources[k] for k in ("reference", "alignments", "truth", "tracks"))
    assert all(isinstance(s, PerBaseSource) for s in sources.values())
    n = len(WINDOW)
    seq = ref.per_base(WINDOW)
    assert seq.dtype == np.uint8 and seq.shape == (n,)
    assert np.array_equal(seq, ref.fetch("chr20", WINDOW.start, WINDOW.end))

    evidence = bam.per_base(WINDOW)
    assert evidence.dtype == np.float32 and evidence.shape == (n, len(EVIDENCE_FEATURES))
    assert np.array_equal(evidence, bam.evidence("chr20", WINDOW.start, WINDOW.end))
    assert evidence[:, Evidence.depth].sum() > 0

    labels = truth.per_base(WINDOW)
    confident = IntervalSet(read_bed(chr20["bed"], ref.contigs)).mask("chr20", WINDOW.start, WINDOW.end)
    expected = TruthVariants(chr20["vcf"], ref).labels("chr20", WINDOW.start, WINDOW.end)
    assert labels.dtype == LABEL_DTYPE and labels.shape == (n,) and 0 < confident.sum() < n
    for name in LABEL_DTYPE.names:
        want = np.where(confident & expected.mask, getattr(expected, name), UNSCORED)
        assert np.array_equal(labels[name], want), name
    assert (labels["genotype"] > 0).sum() > 10

    in_bed = tracks.per_base(WINDOW)
    assert in_bed.dtype == np.float32 and in_bed.shape == (n, 1)
    assert np.array_equal(in_bed[:, 0] == 1, confident)

    empty = Interval("chr20", WINDOW.start, WINDOW.start)
    assert [len(s.per_base(empty)) for s in sources.values()] == [0, 0, 0, 0]
    for source in sources.values():
        with pytest.raises(RegionError, match="past the end"):
            source.per_base(Interval("chr20", 63_025_000, 63_025_521))


def test_truth_scored_in_is_a_copy(sources, chr20):
    everywhere = TruthVariants(chr20["vcf"], sources["reference"])
    scored = everywhere.scored_in([Interval("chr20", WINDOW.start, WINDOW.start + 10)])
    assert everywhere.confident is None and (everywhere.per_base(WINDOW)["genotype"] != UNSCORED).all()
    assert (scored.per_base(WINDOW)["genotype"] != UNSCORED).sum() == 10


def test_sources_pickled_into_a_spawned_process_read_the_same(sources):
    handled = {name: s for name, s in sources.items() if isinstance(s, LazyHandle)}
    assert sorted(handled) == ["alignments", "reference", "truth"]
    here = {name: s.per_base(WINDOW) for name, s in handled.items()}  # the parent's handles are open now
    assert all(pickle.loads(pickle.dumps(s))._handle is None for s in handled.values())
    with multiprocessing.get_context("spawn").Pool(1) as pool:  # each source travels pickled, opens its own
        there = {name: pool.apply(s.per_base, (WINDOW,)) for name, s in handled.items()}
    for name, source in handled.items():
        assert there[name].dtype == here[name].dtype and np.array_equal(there[name], here[name]), name
        assert np.array_equal(source.per_base(WINDOW), here[name])  # the parent's handle still reads


def test_close_and_context_manager(chr20):
    with Alignments(chr20["bam"]) as bam:
        before = bam.per_base(WINDOW)
        assert bam._handle is not None
    assert bam._handle is None and np.array_equal(bam.per_base(WINDOW), before)  # reopens on use
