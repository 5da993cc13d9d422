"""`genoformer merge`: shards written to the predictions contract (docs/hdf5.md) with plain h5py,
merged through the real CLI, compared with the arrays they were cut from (plain numpy)."""
from __future__ import annotations

import hashlib
import json
import re

import h5py
import numpy as np
import pytest

from cli.test_bad_inputs import assert_clean_failure, run_cli
from genoformer.coords import Interval
from genoformer.errors import InputError
from genoformer.io.variant_classes import VARIANT_CLASSES

LENGTHS = {"chrA": 5_000, "chrB": 3_000}
CLASSES = list(VARIANT_CLASSES)  # the layout predict writes


def _truth(contig: str) -> dict[str, np.ndarray]:
    """Per-base arrays over a whole contig, as one predict run over everything would write them."""
    rng = np.random.default_rng(len(contig) * 1000 + LENGTHS[contig])
    n = LENGTHS[contig]
    probs = rng.dirichlet(np.ones(len(CLASSES)), size=n).astype(np.float16)
    return {"variant/probs": probs,
            "variant/alt": rng.choice(np.frombuffer(b"\0ACGT", np.uint8), size=n),
            "variant/depth": rng.integers(0, 60, size=n).astype(np.uint16),
            "variant/deletion_fraction": rng.random(n).astype(np.float16)}


def _md5() -> dict[str, str]:
    return {c: hashlib.md5(c.encode() * 7).hexdigest() for c in LENGTHS}  # stand-ins: same for all shards


def write_shard(path, regions: dict[str, list[tuple[int, int]]], *, complete: bool = True, chunk: int = 1024,
                **attrs):
    """A predictions file to the contract: truth values where `regions` (0-based) cover, 0 elsewhere."""
    root = dict(format="genoformer-predictions", format_version=1, complete=complete, genoformer_version="0.1.0",
                task="variant", model_sha256="ab" * 32, model=json.dumps({"task": "variant"}),
                reference="/nonexistent/ref.fa", contig_md5=json.dumps(_md5()), command="genoformer predict ...",
                created="2026-11-23T18:00:00+00:00", hash_seed=0, window=1536, margin=128,
                predict_config=json.dumps({"regions": [f"{c}:{s + 1}-{e}" for c, r in regions.items()
                                                       for s, e in r]}), bam="/data/sample.bam") | attrs
    with h5py.File(path, "w") as fh:
        fh.attrs.update(root)
        for contig, runs in regions.items():
            group = fh.create_group(f"contigs/{contig}")
            group.attrs["length"] = LENGTHS[contig]
            covered = np.zeros(LENGTHS[contig], bool)
            for start, end in runs:
                covered[start:end] = True
            group.create_dataset("covered", data=covered, chunks=(chunk,), compression="gzip")
            for name, full in _truth(contig).items():
                data = np.where(covered.reshape((-1,) + (1,) * (full.ndim - 1)), full, 0).astype(full.dtype)
                ds = group.create_dataset(name, data=data, chunks=(chunk,) + full.shape[1:], compression="gzip")
                if name == "variant/probs":
                    ds.attrs["classes"] = CLASSES
    return path


def test_merge_equals_the_arrays_the_shards_were_cut_from(tmp_path):
    runs = {"chrA": [(0, 1_500), (4_000, 5_000)], "chrB": [(100, 3_000)]}
    shards = [write_shard(tmp_path / "s1.h5", {"chrA": [(0, 1_500)]}),
              write_shard(tmp_path / "s2.h5", {"chrA": [(4_000, 5_000)], "chrB": [(100, 2_000)]}),
              write_shard(tmp_path / "s3.h5", {"chrB": [(2_000, 3_000)]})]
    out = tmp_path / "sample.h5"
    proc = run_cli("merge", *shards, "--out", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "merged 3 shards" in proc.stdout and "5,400 bases" in proc.stdout
    with h5py.File(out, "r") as fh:
        assert fh.attrs["complete"] and fh.attrs["format"] == "genoformer-predictions"
        assert fh.attrs["model_sha256"] == "ab" * 32 and fh.attrs["hash_seed"] == 0
        assert json.loads(fh.attrs["contig_md5"]) == _md5()
        merged_from = json.loads(fh.attrs["merged_from"])
        assert [m["path"] for m in merged_from] == [str(s.resolve()) for s in shards]
        assert [m["bases"] for m in merged_from] == [{"chrA": 1_500}, {"chrA": 1_000, "chrB": 1_900},
                                                     {"chrB": 1_000}]
        assert json.loads(fh.attrs["merge_config"])["shards"] == [str(s) for s in shards]
        # the run the merged file stands for: every base covered, as 1-based regions
        assert json.loads(fh.attrs["predict_config"])["regions"] == ["chrA:1-1500", "chrA:4001-5000",
                                                                     "chrB:101-3000"]
        assert "merge" in fh.attrs["command"]
        assert sorted(fh["contigs"]) == ["chrA", "chrB"]
        for contig, truth in ((c, _truth(c)) for c in LENGTHS):
            group = fh[f"contigs/{contig}"]
            assert group.attrs["length"] == LENGTHS[contig]
            covered = np.zeros(LENGTHS[contig], bool)
            for start, end in runs[contig]:
                covered[start:end] = True
            np.testing.assert_array_equal(group["covered"][:], covered)
            for name, full in truth.items():
                got = group[name][:]
                assert got.dtype == full.dtype and group[name].compression == "gzip"
                np.testing.assert_array_equal(got[covered], full[covered])
                assert not got[~covered].any()
            assert list(group["variant/probs"].attrs["classes"]) == CLASSES
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_refuses_overlapping_shards(tmp_path):
    a = write_shard(tmp_path / "a.h5", {"chrA": [(0, 1_100)]})
    b = write_shard(tmp_path / "b.h5", {"chrA": [(1_000, 2_000)]})
    proc = run_cli("merge", a, b, "--out", tmp_path / "m.h5", "--no-progress")
    # bases 1,000..1,099 (0-based) are chrA:1,001-1,100 (1-based)
    assert_clean_failure(proc, 3, "overlap", "a.h5", "b.h5", re.escape("chrA:1,001-1,100"), "100 bases")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "b.h5"]


def test_refuses_missing_shards(tmp_path):
    a = write_shard(tmp_path / "a.h5", {"chrA": [(0, 2_000)]})
    c = write_shard(tmp_path / "c.h5", {"chrA": [(3_000, 5_000)]})
    bed = tmp_path / "expected.bed"
    bed.write_text("chrA\t0\t2000\nchrA\t2000\t5000\nchrB\t0\t100\n")
    fasta = tmp_path / "ref.fa"  # the reference the shards name, for contig lengths
    fasta.write_text("".join(f">{c}\n{'ACGT' * (n // 4)}\n" for c, n in LENGTHS.items()))
    for path in (a, c):
        with h5py.File(path, "a") as fh:
            fh.attrs["reference"] = str(fasta)
    proc = run_cli("merge", a, c, "--out", tmp_path / "m.h5", "--expect-regions", bed, "--no-progress")
    assert_clean_failure(proc, 3, "1,100 expected bases uncovered",
                         re.escape("chrA:2,001-3,000"), re.escape("chrB:1-100"))
    proc = run_cli("merge", a, c, "--out", tmp_path / "m.h5", "--expect-region", "chrA:1-2,000", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    proc = run_cli("merge", a, c, "--out", tmp_path / "m2.h5", "--expect-contigs", "--no-progress")
    assert_clean_failure(proc, 3, re.escape("chrA:2,001-3,000"), re.escape("chrB:1-3,000"))
    assert not (tmp_path / "m2.h5").exists()


@pytest.mark.parametrize("attr, value, needle", [
    ("model_sha256", "cd" * 32, "different models"),
    ("task", "pattern", "different tasks"),
    ("hash_seed", 7, "different hash seeds"),
    ("window", 3072, "different window sizes"),
    ("bam", "/data/other.bam", "different read files"),
    ("contig_md5", json.dumps(_md5() | {"chrA": "0" * 32}), "different references"),
])
def test_refuses_shards_that_do_not_belong_together(tmp_path, attr, value, needle):
    a = write_shard(tmp_path / "a.h5", {"chrA": [(0, 1_000)]})
    b = write_shard(tmp_path / "b.h5", {"chrA": [(1_000, 2_000)]}, **{attr: value})
    if attr == "task":  # a well-formed pattern shard: its probabilities under its task's name
        with h5py.File(b, "a") as fh:
            fh.move("contigs/chrA/variant/probs", "contigs/chrA/pattern/probs")
    proc = run_cli("merge", a, b, "--out", tmp_path / "m.h5", "--no-progress")
    assert_clean_failure(proc, 3, needle, "a.h5", "b.h5")
    assert not (tmp_path / "m.h5").exists()


def test_refuses_incomplete_and_foreign_files(tmp_path):
    a = write_shard(tmp_path / "a.h5", {"chrA": [(0, 1_000)]})
    b = write_shard(tmp_path / "b.h5", {"chrA": [(1_000, 2_000)]}, complete=False)
    assert_clean_failure(run_cli("merge", a, b, "--out", tmp_path / "m.h5"), 3, "b.h5", "incomplete")
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5\n")
    assert_clean_failure(run_cli("merge", a, text, "--out", tmp_path / "m.h5"), 3, "notes.h5", "HDF5")
    assert_clean_failure(run_cli("merge", a, tmp_path / "gone.h5", "--out", tmp_path / "m.h5"), 3, "gone.h5")
    with h5py.File(b, "a") as fh:
        fh.attrs["complete"] = True
        fh.attrs["format"] = "something-else"
    assert_clean_failure(run_cli("merge", a, b, "--out", tmp_path / "m.h5"), 3, "b.h5", "not a genoformer")


def test_existing_output_needs_force(tmp_path):
    a = write_shard(tmp_path / "a.h5", {"chrA": [(0, 1_000)]})
    out = tmp_path / "m.h5"
    out.write_bytes(b"previous")
    assert_clean_failure(run_cli("merge", a, "--out", out, "--no-progress"), 4, "m.h5", "exists")
    assert out.read_bytes() == b"previous"
    proc = run_cli("merge", a, "--out", out, "--force", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    with h5py.File(out, "r") as fh:
        assert fh["contigs/chrA/covered"][:].sum() == 1_000
    assert_clean_failure(run_cli("merge", a, "--out", a), 2, "also one of the shards")


def test_merge_of_two_predicted_shards_equals_one_run_over_both(tmp_path, chr20, tiny_variant_model):
    """Real `predict` on two adjacent regions (a boundary off the window grid), merged, against one run."""
    from genoformer.predict.merge import MergeConfig, merge
    from genoformer.predict.runner import PredictConfig, predict

    def run(out, *regions):
        predict(PredictConfig(model=str(tiny_variant_model), reference=str(chr20["fasta"]), bam=str(chr20["bam"]),
                              regions=list(regions), out=str(out), progress=False))
        return out

    a = run(tmp_path / "a.h5", "chr20:10,000,001-10,003,100")
    b = run(tmp_path / "b.h5", "chr20:10,003,101-10,006,000")
    one = run(tmp_path / "one.h5", "chr20:10,000,001-10,006,000")
    merge(MergeConfig(shards=(str(a), str(b)), out=str(tmp_path / "ab.h5"),
                      expect_regions=("chr20:10,000,001-10,006,000",), progress=False))
    with h5py.File(one, "r") as want, h5py.File(tmp_path / "ab.h5", "r") as got:
        for key in ("model_sha256", "contig_md5", "hash_seed", "window", "margin", "task", "bam", "reference"):
            assert got.attrs[key] == want.attrs[key], key
        names = []
        want["contigs/chr20"].visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
        assert sorted(names) == ["covered", "variant/alt", "variant/deletion_fraction", "variant/depth",
                                 "variant/probs"]
        for name in names:
            np.testing.assert_array_equal(got[f"contigs/chr20/{name}"][10_000_000:10_006_000],
                                          want[f"contigs/chr20/{name}"][10_000_000:10_006_000])
        assert got["contigs/chr20/covered"][:].sum() == 6_000
    b_only = tmp_path / "b2.h5"
    run(b_only, "chr20:10,003,001-10,004,000")  # overlaps a by 100 bases
    with pytest.raises(InputError, match=r"a\.h5 and .*b2\.h5 both cover chr20:10,003,001-10,003,100"):
        merge(MergeConfig(shards=(str(a), str(b_only)), out=str(tmp_path / "x.h5"), progress=False))


def test_shards_chunked_differently(tmp_path, monkeypatch):
    """Chunks a shard covers alone are copied as stored; the rest (chunks shared by two shards, or
    a shard chunked unlike the output) are decoded.  Either way: the values the shards were cut
    from.  Then the same with no chunk copied at all (1,000-base blocks, runs across block edges)."""
    import genoformer.io.predictions as predictions
    import genoformer.predict.merge as merge_module
    import genoformer.predict.merge_checks as merge_checks

    runs = {"chrA": [(0, 2_100), (2_100, 5_000)], "chrB": [(2_500, 3_000), (100, 2_000)]}
    shards = [write_shard(tmp_path / "s1.h5", {"chrA": [runs["chrA"][0]], "chrB": [runs["chrB"][0]]}),
              write_shard(tmp_path / "s2.h5", {"chrA": [runs["chrA"][1]], "chrB": [runs["chrB"][1]]}, chunk=700)]

    def check(out):
        with h5py.File(out, "r") as fh:
            for contig, truth in ((c, _truth(c)) for c in LENGTHS):
                covered = np.zeros(LENGTHS[contig], bool)
                for start, end in runs[contig]:
                    covered[start:end] = True
                np.testing.assert_array_equal(fh[f"contigs/{contig}/covered"][:], covered)
                for name, full in truth.items():
                    got = fh[f"contigs/{contig}/{name}"][:]
                    np.testing.assert_array_equal(got[covered], full[covered])
                    assert not got[~covered].any()

    result = merge_module.merge(merge_module.MergeConfig(shards=tuple(map(str, shards)), out=str(tmp_path / "a.h5"),
                                                         progress=False))
    assert result.covered == {"chrA": 5_000, "chrB": 2_400}
    check(result.out)
    monkeypatch.setattr(merge_module, "_same_layout", lambda src, dst: False)
    monkeypatch.setattr(predictions, "SCAN", 1_000)
    assert merge_checks.read_shard(shards[0]).covered.merged() == [Interval("chrA", 0, 2_100),
                                                                   Interval("chrB", 2_500, 3_000)]
    check(merge_module.merge(merge_module.MergeConfig(shards=tuple(map(str, shards)), out=str(tmp_path / "b.h5"),
                                                      progress=False)).out)


@pytest.mark.parametrize("chunk", [1024, 700])  # a chunk copied as stored (checked) / decoded
def test_damaged_shard_is_named_and_nothing_is_written(tmp_path, chunk):
    a = write_shard(tmp_path / "a.h5", {"chrA": [(0, 2_048)]})
    b = write_shard(tmp_path / "b.h5", {"chrA": [(2_048, 5_000)]}, chunk=chunk)
    with h5py.File(b, "r") as fh:  # where the first stored chunk of b's probs lies in the file
        info = fh["contigs/chrA/variant/probs"].id.get_chunk_info_by_coord((3 * chunk, 0))
    with open(b, "r+b") as fh:
        fh.seek(info.byte_offset)
        fh.write(bytes(range(256))[: min(info.size, 256)])  # not a deflate stream any more
    proc = run_cli("merge", a, b, "--out", tmp_path / "m.h5", "--no-progress")
    assert_clean_failure(proc, 3, "b.h5", "variant/probs")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5", "b.h5"]


def test_expected_regions_at_exome_scale():
    """50,000 expected intervals against 50,000 covered runs (a quadratic check would not finish);
    the one uncovered stretch is found exactly: bases 1,700..1,706 (0-based) = c:1,701-1,707."""
    from genoformer.coords import IntervalSet
    from genoformer.predict.merge_checks import Shard, check_expected

    runs = [(i * 300, i * 300 + 200) for i in range(50_000)]
    shards = [Shard(path="x.h5", attrs={}, lengths={"c": 15_000_000},
                    covered=IntervalSet(Interval("c", s, e) for s, e in runs[part::2])) for part in (0, 1)]
    expected = [Interval("c", s + 10, e - 10) for s, e in runs]
    check_expected(shards, expected)
    with pytest.raises(InputError, match=r"leave 7 expected bases uncovered: c:1,701-1,707$"):
        check_expected(shards, expected + [Interval("c", 1_695, 1_707)])


def test_interrupted_merge_leaves_nothing(tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM, which the CLI turns into SystemExit) while the second contig is written:
    neither the output nor a temp file is left."""
    import genoformer.predict.merge as merge_module

    shards = [write_shard(tmp_path / "a.h5", {"chrA": [(0, 1_000)], "chrB": [(0, 500)]})]
    real = merge_module._write_contig

    def interrupted(out, contig, *args):
        if contig == "chrB":
            raise KeyboardInterrupt
        return real(out, contig, *args)

    monkeypatch.setattr(merge_module, "_write_contig", interrupted)
    with pytest.raises(KeyboardInterrupt):
        merge_module.merge(merge_module.MergeConfig(shards=(str(shards[0]),), out=str(tmp_path / "m.h5"),
                                                    progress=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5"]
