"""The long-range example, checked against pysam's reading of its FASTA and a plain string search."""
from __future__ import annotations

import hashlib

import numpy as np
import pysam
import pytest
from click.testing import CliRunner

from genoformer.commands.simulate import simulate as simulate_command
from genoformer.errors import UsageError
from genoformer.io.tracks import Tracks
from genoformer.simulate.long_range import PARTNERS, SITE, simulate_long_range

DISTANCES = (60, 500)
PAIRS = 6


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return simulate_long_range(tmp_path_factory.mktemp("lr") / "ex", seed=5, distances=DISTANCES, pairs=PAIRS)


@pytest.fixture(scope="module")
def genome(example) -> dict[str, str]:
    with pysam.FastaFile(str(example.reference)) as fa:
        return {name: fa.fetch(name) for name in fa.references}


@pytest.fixture(scope="module")
def pairs(example) -> list[dict]:
    lines = example.pairs.read_text().splitlines()
    header = lines[0].split("\t")
    return [{k: int(v) if v.lstrip("+-").isdigit() else v for k, v in zip(header, line.split("\t"))}
            for line in lines[1:]]


def find_all(text: str, motif: str) -> list[int]:
    out, at = [], text.find(motif)
    while at >= 0:
        out.append(at)
        at = text.find(motif, at + 1)
    return out


def test_pairs_planted_at_the_given_distances(genome, pairs):
    assert set(genome) == {f"lr{d}" for d in DISTANCES}
    for d in DISTANCES:
        rows = [p for p in pairs if p["contig"] == f"lr{d}"]
        assert len(rows) == PAIRS
        assert sum(p["partner"] == "A" for p in rows) == PAIRS // 2  # balanced classes
        for p in rows:
            seq = genome[p["contig"]]
            assert seq[p["site_start"]:p["site_end"]] == SITE
            assert seq[p["partner_start"]:p["partner_end"]] == PARTNERS[p["partner"]]
            assert abs(p["offset"]) == d == abs(p["partner_start"] - p["site_start"])
    assert {np.sign(p["offset"]) for p in pairs} == {-1, 1}  # partners on both sides


def test_motifs_only_where_planted_and_own_partner_nearest(genome, pairs):
    for contig, seq in genome.items():
        rows = [p for p in pairs if p["contig"] == contig]
        assert find_all(seq, SITE) == sorted(p["site_start"] for p in rows)
        partners = []
        for kind, motif in PARTNERS.items():
            found = find_all(seq, motif)
            assert found == sorted(p["partner_start"] for p in rows if p["partner"] == kind)
            partners += found
        for p in rows:
            others = [abs(q - p["site_start"]) for q in partners if q != p["partner_start"]]
            assert min(others) >= 2 * abs(p["offset"])


def test_class_beds_label_each_site_with_its_partner(example, genome, pairs):
    """Read as the pattern task reads them (Tracks): class long_range_X is 1 exactly on the sites whose partner is X."""
    tracks = Tracks.from_files([str(p) for p in example.class_beds.values()], {c: len(s) for c, s in genome.items()})
    assert tracks.class_names == ["long_range_A", "long_range_B"]
    for contig, seq in genome.items():
        mask = tracks.mask(contig, 0, len(seq))
        for column, kind in enumerate("AB"):
            expected = np.zeros(len(seq), bool)
            for p in pairs:
                if p["contig"] == contig and p["partner"] == kind:
                    expected[p["site_start"]:p["site_end"]] = True
            assert np.array_equal(mask[:, column], expected)


def digest(ex) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in (ex.reference, ex.pairs, ex.manifest, *ex.class_beds.values())}


def test_same_seed_same_files_other_seed_differs(example, tmp_path):
    again = digest(simulate_long_range(tmp_path / "again", seed=5, distances=DISTANCES, pairs=PAIRS))
    assert again == digest(example)
    other = digest(simulate_long_range(tmp_path / "other", seed=6, distances=DISTANCES, pairs=PAIRS))
    assert other["reference.fa"] != again["reference.fa"] and other["pairs.tsv"] != again["pairs.tsv"]


@pytest.mark.parametrize("change", [dict(seed=-1), dict(distances=()), dict(distances=(49,)),
                                    dict(distances=(100, 100)), dict(pairs=1), dict(gc=1.0),
                                    dict(distances=(10 ** 8,), pairs=10)])
def test_bad_parameters_are_usage_errors(tmp_path, change):
    with pytest.raises(UsageError):
        simulate_long_range(tmp_path / "x", **{"seed": 0, "distances": (100,), "pairs": 2, **change})
    assert not (tmp_path / "x").exists()


def test_cli_writes_long_range_example_and_refuses_read_options(tmp_path):
    out = tmp_path / "lr"
    result = CliRunner().invoke(simulate_command, ["--out", str(out), "--long-range-distance", "80",
                                                   "--long-range-pairs", "3", "--seed", "2"])
    assert result.exit_code == 0, result.output
    assert (out / "long_range_A.bed").is_file() and not (out / "reads.bam").exists()
    assert len((out / "pairs.tsv").read_text().splitlines()) == 1 + 3
    result = CliRunner().invoke(simulate_command, ["--out", str(tmp_path / "x"), "--long-range-distance", "80",
                                                   "--coverage", "5"])
    assert result.exit_code == 2 and "--coverage does not apply" in result.output
