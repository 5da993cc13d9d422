"""Shard planning for batch prediction: hand-computed plans, and the invariant that shards are
disjoint and cover exactly the requested bases (checked base by base with numpy)."""
from __future__ import annotations

import numpy as np
import pytest

from genoformer.coords import Interval
from genoformer.errors import UsageError
from genoformer.predict.shards import plan_shards


def test_long_contig_is_cut_at_fixed_coordinates():
    shards = plan_shards({"chr20": 63_025_520}, 20_000_000)
    assert [s.regions for s in shards] == [["chr20:1-20000000"], ["chr20:20000001-40000000"],
                                           ["chr20:40000001-60000000"], ["chr20:60000001-63025520"]]
    assert [s.name for s in shards] == ["0001_chr20_1", "0002_chr20_20000001", "0003_chr20_40000001",
                                        "0004_chr20_60000001"]


def test_small_contigs_are_packed_in_reference_order():
    contigs = {"chr1": 250, "chrUn_a": 30, "chrUn_b": 40, "chrUn_c": 50, "chrM": 16}
    shards = plan_shards(contigs, 100)
    # chr1 -> 100 | 100 | 50 + 30 (chrUn_a); chrUn_b 40 would make 120, so 40 + 50 (b, c); chrM: 106 > 100
    assert [[iv.to_region() for iv in s.intervals] for s in shards] == [
        ["chr1:1-100"], ["chr1:101-200"], ["chr1:201-250", "chrUn_a:1-30"], ["chrUn_b:1-40", "chrUn_c:1-50"],
        ["chrM:1-16"]]
    assert [len(s) for s in shards] == [100, 100, 80, 90, 16]


def test_regions_are_merged_and_cut_on_the_same_grid():
    contigs = {"chrA": 1_000, "chrB": 1_000}
    regions = [Interval("chrB", 10, 20), Interval("chrA", 150, 420), Interval("chrA", 400, 450)]
    shards = plan_shards(contigs, 200, regions)
    # chrA 150-450 is cut at 200 and 400 (multiples of the shard size, not of the region start)
    assert [[iv.to_bed() for iv in s.intervals] for s in shards] == [
        ["chrA\t150\t200"], ["chrA\t200\t400"], ["chrA\t400\t450", "chrB\t10\t20"]]


@pytest.mark.parametrize("size", [1, 7, 64, 1_000, 10_000])
def test_shards_are_disjoint_and_cover_exactly_the_regions(size):
    rng = np.random.default_rng(size)
    contigs = {f"c{i}": int(n) for i, n in enumerate(rng.integers(1, 3_000, size=6))}
    regions = []
    for contig, n in contigs.items():
        for start in rng.integers(0, n, size=3):
            regions.append(Interval(contig, int(start), int(min(n, start + rng.integers(1, 800)))))
    want = {c: np.zeros(n, int) for c, n in contigs.items()}
    for iv in regions:
        want[iv.contig][iv.start:iv.end] = 1
    got = {c: np.zeros(n, int) for c, n in contigs.items()}
    shards = plan_shards(contigs, size, regions)
    for shard in shards:
        assert 0 < len(shard) <= size
        for iv in shard.intervals:
            got[iv.contig][iv.start:iv.end] += 1
    for contig in contigs:
        np.testing.assert_array_equal(got[contig], want[contig])
    assert len({s.name for s in shards}) == len(shards)


def test_bad_plans():
    with pytest.raises(UsageError, match="positive"):
        plan_shards({"chrA": 10}, 0)
    with pytest.raises(UsageError, match="chrZ"):
        plan_shards({"chrA": 10}, 5, [Interval("chrZ", 0, 5)])
    assert plan_shards({"chrA": 10}, 5, []) == []
