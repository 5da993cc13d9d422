"""Tiling against per-base coverage counted one window at a time."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genoformer.coords import Interval
from genoformer.errors import RegionError, UsageError
from genoformer.data.windows import Window, tile, windows_containing

LENGTHS = {"chr1": 500, "chr2": 37, "chrM": 16}


@st.composite
def intervals(draw):
    out = []
    for _ in range(draw(st.integers(0, 5))):
        contig = draw(st.sampled_from(list(LENGTHS)))
        start = draw(st.integers(0, LENGTHS[contig]))
        out.append(Interval(contig, start, draw(st.integers(start, LENGTHS[contig]))))
    return out


sizes = st.integers(1, 120).flatmap(lambda w: st.tuples(st.just(w), st.integers(1, w)))


def wanted_bases(ivs):
    return {c: np.isin(np.arange(n), [b for iv in ivs if iv.contig == c for b in range(iv.start, iv.end)])
            for c, n in LENGTHS.items()}


@settings(max_examples=200, deadline=None)
@given(intervals(), sizes)
def test_valid_parts_cover_exactly_the_intervals(ivs, ws):
    window, stride = ws
    windows = tile(ivs, window, stride, LENGTHS)
    covered = {c: np.zeros(n, dtype=int) for c, n in LENGTHS.items()}
    for w in windows:
        assert len(w) == window and w.end == w.start + window and 1 <= w.n_valid <= window
        covered[w.contig][w.start:w.valid_end] += 1
    wanted = wanted_bases(ivs)
    for c in LENGTHS:
        assert ((covered[c] > 0) == wanted[c]).all()
        if stride == window:
            assert covered[c].max(initial=0) <= 1  # no base seen twice without overlap asked for


@settings(max_examples=200, deadline=None)
@given(intervals(), sizes)
def test_windows_step_by_stride_and_pad_only_at_interval_ends(ivs, ws):
    window, stride = ws
    windows = tile(ivs, window, stride, LENGTHS)
    order = list(LENGTHS)
    assert [order.index(w.contig) for w in windows] == sorted(order.index(w.contig) for w in windows)
    wanted = wanted_bases(ivs)
    for w, nxt in zip(windows, windows[1:] + [None]):
        if nxt is not None and nxt.contig == w.contig and nxt.start <= w.valid_end:  # same interval
            assert nxt.start - w.start == stride and w.n_valid == window
        else:  # last window of its interval: it reaches the interval end
            assert w.valid_end == LENGTHS[w.contig] or not wanted[w.contig][w.valid_end]


def test_whole_contigs_by_default_with_explicit_padding():
    windows = tile(None, 200, contig_lengths=LENGTHS)
    assert [(w.contig, w.start, w.end, w.n_valid) for w in windows] == [
        ("chr1", 0, 200, 200), ("chr1", 200, 400, 200), ("chr1", 400, 600, 100),
        ("chr2", 0, 200, 37), ("chrM", 0, 200, 16)]
    assert windows[2].valid_mask().tolist() == [True] * 100 + [False] * 100
    assert windows[2].to_interval() == Interval("chr1", 400, 500)


def test_overlapping_intervals_are_merged():
    ivs = [Interval("chr1", 50, 120), Interval("chr1", 0, 60), Interval("chr1", 120, 130)]
    assert tile(ivs, 100, contig_lengths=LENGTHS) == [Window("chr1", 0, 100, 100), Window("chr1", 100, 200, 30)]


@settings(max_examples=100, deadline=None)
@given(intervals(), sizes, st.sampled_from(list(LENGTHS)), st.integers(0, 499))
def test_windows_containing_a_base(ivs, ws, contig, pos):
    windows = tile(ivs, *ws, LENGTHS)
    found = windows_containing(windows, contig, pos)
    assert found == [i for i, w in enumerate(windows)
                     if w.contig == contig and pos in range(w.start, w.start + w.n_valid)]
    inside = any(iv.contig == contig and iv.start <= pos < iv.end for iv in ivs)
    assert bool(found) == inside
    assert len(found) <= -(-ws[0] // ws[1])


@pytest.mark.parametrize("window,stride", [(0, None), (-5, None), (10, 11), (10, 0), (2.5, None), (True, None)])
def test_bad_window_or_stride(window, stride):
    with pytest.raises(UsageError):
        tile(None, window, stride, LENGTHS)


def test_intervals_off_the_reference_raise_region_error():
    with pytest.raises(RegionError, match="past the end of chr2"):
        tile([Interval("chr2", 0, 38)], 10, contig_lengths=LENGTHS)
    with pytest.raises(RegionError, match="did you mean chr1"):
        tile([Interval("1", 0, 10)], 10, contig_lengths=LENGTHS)
    with pytest.raises(UsageError, match="contig lengths"):
        tile(None, 10)


def test_window_invariants():
    with pytest.raises(ValueError):
        Window("chr1", 10, 10, 0)
    with pytest.raises(ValueError):
        Window("chr1", 0, 10, 11)
