"""Regions and BED intervals: 1-based strings vs 0-based intervals, validation, merging."""
from __future__ import annotations

import gzip

import click
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from genoformer.coords import (REGION, Interval, IntervalSet, check_interval, close_names, merge_intervals,
                               parse_region, read_bed, runs, split_region)
from genoformer.errors import RegionError, UsageError

LENGTHS = {"chr1": 1_000, "chr20": 63_025_520, "chrM": 16_571, "HLA-A*01:01:01:01": 3_503}


@pytest.mark.parametrize("text,expected", [
    ("chr20", ("chr20", 0, 63_025_520)),
    ("chr20:10,000,001-10,100,000", ("chr20", 10_000_000, 10_100_000)),
    ("chr20:10000001-10100000", ("chr20", 10_000_000, 10_100_000)),
    ("  chr1:11-20 ", ("chr1", 10, 20)),
    ("chr1:1-1", ("chr1", 0, 1)),
    ("chr1:1000", ("chr1", 999, 1_000)),  # samtools: START alone runs to the contig end
    ("chr1:5", ("chr1", 4, 1_000)),
    ("chr1:5-", ("chr1", 4, 1_000)),
    ("chr1:1-1,000", ("chr1", 0, 1_000)),
    ("HLA-A*01:01:01:01", ("HLA-A*01:01:01:01", 0, 3_503)),  # a whole name with ':' wins
    ("{HLA-A*01:01:01:01}:2-3", ("HLA-A*01:01:01:01", 1, 3)),
])
def test_parse_region(text, expected):
    assert parse_region(text, LENGTHS) == Interval(*expected)


@pytest.mark.parametrize("text,match", [
    ("", "missing or blank contig"),
    (":1-5", "missing or blank contig"),
    ("chr1:", "cannot read ''"),
    ("chr1:0-5", "1-based"),
    ("chr1:-5", "cannot read '-5'"),
    ("chr1:5-x", "cannot read '5-x'"),
    ("chr1:1.5-7", "cannot read"),
    ("chr 1:1-5", "blank contig"),
    ("{chr1:1-5", "unbalanced braces"),
    ("{chr1}x:1-5", "unbalanced braces"),
])
def test_bad_syntax_is_a_usage_error(text, match):
    with pytest.raises(UsageError, match=match) as err:
        parse_region(text, LENGTHS)
    assert err.value.exit_code == 2 and "\n" not in str(err.value) and err.value.hint


@pytest.mark.parametrize("text,match", [
    ("chr21:1-10", r"contig 'chr21' not found \(did you mean chr1 or chr20\?\)"),
    ("20:1-10", r"contig '20' not found \(did you mean chr20\?\)"),
    ("MT", r"did you mean chrM\?"),
    ("chr1:20-11", "start 20 is after end 11"),
    ("chr1:3-2", "start 3 is after end 2"),  # one less than the start: was read as an empty interval
    ("chr1:1-1001", r"runs past the end of chr1 \(1,000 bp\)"),
    ("chr1:1001", "starts past the end of chr1"),
    ("chr1:1001-1002", "starts past the end of chr1"),
])
def test_region_that_does_not_fit_is_a_region_error(text, match):
    with pytest.raises(RegionError, match=match) as err:
        parse_region(text, LENGTHS, source="ref.fa")
    assert err.value.exit_code == 3 and str(err.value).startswith("ref.fa: ") and "\n" not in str(err.value)


def test_unknown_contig_lists_the_reference():
    with pytest.raises(RegionError, match=r"has 4 contigs: chr1, chr20, chrM, HLA") as err:
        parse_region("chrX", LENGTHS)
    assert "did you mean" not in str(err.value)


def test_close_names():
    names = ["1", "2", "MT", "chr20", "chr2"]
    assert close_names("chr1", names)[0] == "1"
    assert close_names("chrM", names)[0] == "MT"
    assert close_names("20", names)[0] == "chr20"
    assert close_names("scaffold_9", names) == []


def test_interval_basics():
    iv = Interval("chr20", 10_000_000, 10_100_000)
    assert len(iv) == 100_000
    assert iv.to_region() == "chr20:10000001-10100000"
    assert iv.to_bed() == "chr20\t10000000\t10100000"
    assert Interval("HLA:1", 0, 5).to_region() == "{HLA:1}:1-5"
    assert sorted([Interval("b", 0, 1), Interval("a", 5, 6), Interval("a", 1, 9)])[0] == Interval("a", 1, 9)
    with pytest.raises(ValueError):
        Interval("chr1", 5, 4)
    with pytest.raises(ValueError):
        Interval("chr1", -1, 4)
    with pytest.raises(ValueError):
        Interval("chr1", 4, 4).to_region()


def test_check_interval():
    assert check_interval("chr1", 0, 1_000, LENGTHS) == Interval("chr1", 0, 1_000)
    assert len(check_interval("chr1", 7, 7, LENGTHS)) == 0
    with pytest.raises(RegionError, match="past the end"):
        check_interval("chr1", 999, 1_001, LENGTHS)
    with pytest.raises(RegionError, match="is after end"):
        check_interval("chr1", 9, 8, LENGTHS)


@st.composite
def intervals(draw, lengths=LENGTHS):
    contig = draw(st.sampled_from(sorted(lengths)))
    start = draw(st.integers(0, lengths[contig] - 1))
    end = draw(st.integers(start + 1, lengths[contig]))
    return Interval(contig, start, end)


@settings(max_examples=300, deadline=None)
@given(intervals(), st.booleans())
def test_region_string_round_trip(iv, commas):
    text = iv.to_region()
    assert split_region(text) == (iv.contig, iv.start + 1, iv.end)  # the string is 1-based, inclusive
    if commas:
        contig, rng = text.rsplit(":", 1)
        beg, end = rng.split("-")
        text = f"{contig}:{int(beg):,}-{int(end):,}"
    assert parse_region(text, LENGTHS) == iv


@settings(max_examples=200, deadline=None)
@given(st.lists(intervals({"a": 60, "b": 30}), max_size=12))
def test_merge_covers_the_same_bases_once(ivs):
    merged = merge_intervals(ivs)
    covered = {(iv.contig, b) for iv in ivs for b in range(iv.start, iv.end)}
    assert {(iv.contig, b) for iv in merged for b in range(iv.start, iv.end)} == covered
    assert sum(len(iv) for iv in merged) == len(covered)  # no base twice
    for a, b in zip(merged, merged[1:]):
        assert a < b and (a.contig != b.contig or a.end < b.start)  # sorted, not even adjacent


def test_merge_examples():
    ivs = [Interval("chr1", 10, 20), Interval("chr1", 20, 30), Interval("chr1", 5, 12), Interval("chr1", 40, 50),
           Interval("chr1", 45, 46), Interval("chrM", 0, 5)]
    assert merge_intervals(ivs) == [Interval("chr1", 5, 30), Interval("chr1", 40, 50), Interval("chrM", 0, 5)]
    assert merge_intervals([]) == []


SMALL = {"a": 60, "b": 30}


def bases(ivs) -> set[tuple[str, int]]:
    """The brute-force per-base set of some intervals."""
    return {(iv.contig, b) for iv in ivs for b in range(iv.start, iv.end)}


@st.composite
def spans(draw, lengths=SMALL):
    """An interval that may be empty, anywhere on a contig."""
    contig = draw(st.sampled_from(sorted(lengths)))
    start = draw(st.integers(0, lengths[contig]))
    return Interval(contig, start, draw(st.integers(start, lengths[contig])))


@settings(max_examples=200, deadline=None)
@given(st.lists(spans(), max_size=10), spans())
def test_interval_set_is_the_set_of_its_bases(ivs, query):
    s, truth = IntervalSet(ivs), bases(ivs)
    merged = list(s)
    assert bases(merged) == truth and len(s) == len(truth) == sum(map(len, merged))
    assert all(len(iv) for iv in merged)
    for a, b in zip(merged, merged[1:]):
        assert a < b and (a.contig != b.contig or a.end < b.start)  # sorted, not even adjacent
    assert s.merged() == merged and s.contigs == sorted({c for c, _ in truth})
    wanted = [(query.contig, b) in truth for b in range(query.start, query.end)]
    assert s.mask(query.contig, query.start, query.end).tolist() == wanted
    assert s.overlaps(query.contig, query.start, query.end) == any(wanted)
    inside = s.within(query.contig, query.start, query.end)
    assert bases(inside) == {(query.contig, b) for b in range(query.start, query.end) if (query.contig, b) in truth}
    assert inside == IntervalSet(inside).merged()  # sorted, disjoint, not adjacent
    assert s.contains(query.contig, query.start, query.end) == all(wanted)
    by_contig = {c: ([iv.start for iv in ivs if iv.contig == c], [iv.end for iv in ivs if iv.contig == c])
                 for c in SMALL}
    assert IntervalSet.from_arrays(by_contig) == s


@settings(max_examples=200, deadline=None)
@given(st.lists(spans(), max_size=8), st.lists(spans(), max_size=8))
def test_interval_set_algebra_matches_set_algebra(ivs, others):
    a, b = IntervalSet(ivs), IntervalSet(others)
    assert bases(a.intersection(b)) == bases(ivs) & bases(others)
    assert bases(a.union(b)) == bases(ivs) | bases(others)
    assert bases(a.difference(b)) == bases(ivs) - bases(others)
    assert a.union(b) == IntervalSet(ivs + others) == a.union(IntervalSet(others[:3]), IntervalSet(others[3:]))
    assert sum(a.bases(c) for c in SMALL) == len(a)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.booleans(), max_size=40), st.integers(0, 20))
def test_runs_and_from_mask_find_every_true_base(mask, offset):
    mask = np.array(mask, dtype=bool)
    starts, ends = runs(mask)
    assert [b for s, e in zip(starts, ends) for b in range(s, e)] == np.flatnonzero(mask).tolist()
    assert bases(IntervalSet.from_mask("a", mask, offset)) == {("a", offset + b) for b in np.flatnonzero(mask)}


def test_interval_set_examples():
    s = IntervalSet([Interval("chr1", 10, 20), Interval("chr1", 20, 30), Interval("chr1", 40, 40),
                     Interval("chrM", 0, 5)])
    assert s.merged() == [Interval("chr1", 10, 30), Interval("chrM", 0, 5)] and len(s) == 25
    assert s.arrays("chr1")[0].tolist() == [10] and s.arrays("chr2")[0].size == 0
    assert s.contains("chr1", 15, 25) and not s.contains("chr1", 25, 31) and not s.overlaps("chr1", 30, 40)
    assert not IntervalSet() and IntervalSet() == IntervalSet([Interval("chr1", 3, 3)])
    with pytest.raises(ValueError, match="0 <= start <= end"):
        IntervalSet.from_arrays({"chr1": ([5], [4])})


def test_read_bed_real_confident_regions(chr20):
    ivs = read_bed(chr20["bed"], {"chr20": 63_025_520})
    rows = [line.split("\t")[:3] for line in chr20["bed"].read_text().splitlines() if line.strip()]
    assert [(iv.contig, iv.start, iv.end) for iv in ivs] == [(c, int(s), int(e)) for c, s, e in rows]
    assert len(ivs) == 11 and sum(map(len, ivs)) == 8_999  # as measured in shared/data/README.md
    assert merge_intervals(ivs) == ivs  # already sorted and disjoint
    with pytest.raises(RegionError, match=r"contig 'chr20' not found \(did you mean 20\?\)") as err:
        read_bed(chr20["bed"], {"20": 63_025_520})
    assert f"{chr20['bed']}:1: " in str(err.value)


def test_read_bed_skips_headers_and_reads_gzip(tmp_path):
    text = "track name=x\nbrowser position chr1:1-10\n# comment\n\nchr1\t0\t10\tname\t0\t+\nchrM 5 9\r\n"
    plain = tmp_path / "a.bed"
    plain.write_text(text)
    gz = tmp_path / "a.bed.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    for path in (plain, gz):
        assert read_bed(path, LENGTHS) == [Interval("chr1", 0, 10), Interval("chrM", 5, 9)]


@pytest.mark.parametrize("line,match", [
    ("chr1\t10", "expected at least 3 BED columns"),
    ("chr1\tten\t20", "must be non-negative integers"),
    ("chr1\t-1\t20", "must be non-negative integers"),
    ("chr1\t20\t20", "empty interval, start 20 is not before end 20"),
    ("chr1\t30\t20", "empty interval"),
    ("chr1\t990\t1001", "runs past the end of chr1"),
    ("chr2\t0\t10", "contig 'chr2' not found"),
])
def test_read_bed_errors_name_file_and_line(tmp_path, line, match):
    path = tmp_path / "bad.bed"
    path.write_text(f"# header\nchr1\t0\t10\n{line}\n")
    with pytest.raises(RegionError, match=match) as err:
        read_bed(path, LENGTHS)
    assert str(err.value).startswith(f"{path}:3: ") and err.value.exit_code == 3


def test_read_bed_missing_or_binary(tmp_path):
    with pytest.raises(RegionError, match="no such BED file"):
        read_bed(tmp_path / "nope.bed", LENGTHS)
    path = tmp_path / "bin.bed"
    path.write_bytes(b"\xff\xfe\x00\x01" * 10)
    with pytest.raises(RegionError, match="cannot read as a text BED file"):
        read_bed(path, LENGTHS)


@click.command()
@click.option("--region", type=REGION, required=True)
def show(region):
    click.echo(repr(region))


@pytest.mark.parametrize("arg,code", [
    ("chr20:10,000,001-10,100,000", 0), ("chrUnknown", 0),  # the reference checks the contig later
    ("chr1:0-5", 2), ("chr1:20-10", 2), ("chr1:a-b", 2), ("", 2),
])
def test_region_param_type_checks_syntax(arg, code):
    result = CliRunner().invoke(show, ["--region", arg])
    assert result.exit_code == code, result.output
    if code:
        assert "Invalid value for '--region'" in result.output
    else:
        assert result.output.strip() == repr(arg)
