"""`genoformer predict` on real data (chr20 reference + NA12878 reads, SARS-CoV-2 genome): the HDF5
schema, region reads against the whole arrays, window stitching against the model run by hand, no
seams between a region alone and a larger run, fixed hash seeds, SIGKILL then --resume, bad input."""
from __future__ import annotations

import hashlib
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pysam
import pytest
import torch

import genoformer
from genoformer.data.datasets import WindowDataset
from genoformer.errors import InputError, OutputError, UsageError
from genoformer.io.alignments import Alignments
from genoformer.model.checkpoint import load_checkpoint, save_checkpoint
from genoformer.io.fasta import Reference
from genoformer.io.predictions import open_predictions, partial_path, read_predictions
from genoformer.model.config import ReformerConfig
from genoformer.model.heads import GenoModel, batch_inputs
from genoformer.model.per_base import PerBaseConfig
from genoformer.data.augment import reverse_complement_item
from genoformer.predict.runner import PredictConfig, predict
from genoformer.tokenize import KmerTokenizer, ProteinTokenizer
from genoformer.predict.grid import Grid, grid_step
from genoformer.data.windows import Window

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from test_bad_inputs import assert_clean_failure, run_cli  # noqa: E402

REGION = "chr20:10,000,001-10,020,000"  # 1-based; 0-based [10_000_000, 10_020_000)
START, END = 10_000_000, 10_020_000


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny models on a shared 2-core box: OpenMP threads only wait for each other (8x slower measured)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(model, reference, out, **kw) -> dict:
    return predict(PredictConfig(model=str(model), reference=str(reference), out=str(out), progress=False, **kw))


@pytest.fixture(scope="module")
def variant_h5(tiny_variant_model, chr20, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("pred") / "variant.h5"
    return out, run(tiny_variant_model, chr20["fasta"], out, bam=str(chr20["bam"]), regions=[REGION])


def test_window_grid_by_hand_and_its_invariants():
    g = Grid(window=10, margin=2, step=6, length=23)
    assert g.n_windows == 4 and [g.kept(i) for i in range(4)] == [(0, 8), (8, 14), (14, 20), (20, 23)]
    assert g.to_window("c", 3) == Window("c", 18, 28, 5) and [g.window_of(p) for p in (0, 7, 8, 22)] == [0, 0, 1, 3]
    rng = np.random.default_rng(0)
    for _ in range(300):
        window = int(rng.integers(6, 400))
        margin = int(rng.integers(0, window // 2))
        step = grid_step(window, margin, 3) if window - 2 * margin >= 3 else None
        if step is None:
            continue
        g = Grid(window, margin, step, length=int(rng.integers(1, 3000)))
        kept = [g.kept(i) for i in range(g.n_windows)]
        assert kept[0][0] == 0 and kept[-1][1] == g.length and step % 3 == 0
        assert all(a[1] == b[0] for a, b in zip(kept, kept[1:])) and all(s < e for s, e in kept)
        for i, (s, e) in enumerate(kept):  # inside the window's real bases, with margin context but at the ends
            w = g.to_window("c", i)
            assert w.start <= s and e <= w.valid_end
            assert i == 0 or s - w.start >= margin
            assert i == g.n_windows - 1 or w.end - e >= margin
            assert g.window_of(s) == i == g.window_of(e - 1)


def test_schema_provenance_and_read_evidence(variant_h5, tiny_variant_model, chr20):
    out, summary = variant_h5
    _, meta, _ = load_checkpoint(tiny_variant_model)
    with pysam.FastaFile(str(chr20["fasta"])) as fa:
        length = fa.get_reference_length("chr20")
        md5 = hashlib.md5(fa.fetch("chr20").upper().encode()).hexdigest()
        ref = fa.fetch("chr20", START, END).upper()
    with h5py.File(out, "r") as f:
        a = f.attrs
        assert (a["format"], a["format_version"], bool(a["complete"]), a["task"]) == \
            ("genoformer-predictions", 1, True, "variant")
        assert a["model_sha256"] == meta["weights_sha256"] and a["genoformer_version"] == genoformer.__version__
        assert json.loads(a["contig_md5"]) == {"chr20": md5}
        assert json.loads(a["model"])["tokenizer"] == meta["tokenizer"]
        assert (a["hash_seed"], a["window"], a["margin"]) == (0, 1536, 384)  # the training window, window // 4
        assert a["reference"] == str(Path(chr20["fasta"]).resolve()) and a["bam"] == str(Path(chr20["bam"]).resolve())
        assert json.loads(a["predict_config"])["regions"] == [REGION] and a["command"] == shlex.join(sys.argv)
        assert "_progress" not in f
        g = f["contigs/chr20"]
        assert g.attrs["length"] == length
        probs, covered = g["variant/probs"], g["covered"]
        assert probs.shape == (length, 3) and probs.dtype == np.float16 and probs.chunks and probs.compression
        assert list(probs.attrs["classes"]) == ["hom_ref", "het", "hom_alt"]
        assert covered.shape == (length,) and covered.dtype == bool
        cov = covered[START - 5000:END + 5000]
        assert cov[5000:-5000].all() and not cov[:5000].any() and not cov[-5000:].any()
        assert int(covered[:].sum()) == END - START == summary["bases"]
        p = probs[START:END].astype(np.float64)
        assert np.allclose(p.sum(1), 1, atol=3e-3) and (probs[START - 5000:START][:] == 0).all()
        alt, depth, delfrac = g["variant/alt"][START:END], g["variant/depth"][START:END], \
            g["variant/deletion_fraction"][START:END]
    # read evidence against pysam: A/C/G/T counts (base quality >= 13), the most supported non-reference base
    with pysam.AlignmentFile(str(chr20["bam"])) as bam:
        counts = np.array(bam.count_coverage("chr20", START, END, quality_threshold=13), dtype=np.int64).T
    ref_codes = np.frombuffer(ref.encode(), np.uint8)
    for col, base in enumerate(b"ACGT"):
        counts[ref_codes == base, col] = -1
    expect_alt = np.where(counts.max(1) > 0, np.frombuffer(b"ACGT", np.uint8)[counts.argmax(1)], 0)
    assert (alt == expect_alt).all() and (alt > 0).sum() > 100
    assert depth.max() > 20 and (delfrac >= 0).all() and (delfrac <= 1).all() and (delfrac > 0).any()

    got = read_predictions(out, "chr20:10,005,001-10,006,000")
    with h5py.File(out, "r") as f:
        g = f["contigs/chr20"]
        s = slice(10_005_000, 10_006_000)
        assert np.array_equal(got.probs, g["variant/probs"][s].astype(np.float32))
        assert np.array_equal(got.covered, g["covered"][s]) and np.array_equal(got.alt, g["variant/alt"][s])
        assert np.array_equal(got.depth, g["variant/depth"][s])
    assert (got.contig, got.start, got.end, got.classes) == ("chr20", 10_005_000, 10_006_000,
                                                             ["hom_ref", "het", "hom_alt"])
    assert got.attrs["contig_md5"] == {"chr20": md5}
    assert genoformer.read_predictions is read_predictions
    with open_predictions(out) as f:
        assert f.contigs == {"chr20": length} and f.task == "variant"


def test_each_base_comes_from_the_centre_of_its_window(variant_h5, tiny_variant_model, chr20):
    """Rerun by hand the grid window that owns a base (window 1536, margin 384: step 768)."""
    out, _ = variant_h5
    model, _, _ = load_checkpoint(tiny_variant_model, hash_seed=0)
    model.eval()
    ref = Reference(chr20["fasta"])
    ds = WindowDataset(ref, [], model.tokenizer, alignments=Alignments(chr20["bam"], ref))
    step, margin = 768, 384
    for pos in (START, START + 383, 10_000_000 + margin + 7 * step, 10_000_000 + margin + 7 * step - 1, END - 1):
        i = (pos - margin) // step
        item = ds[Window("chr20", i * step, i * step + 1536, 1536)]
        with torch.inference_mode():
            logits = model(**batch_inputs({k: v[None] for k, v in item.items() if torch.is_tensor(v)}, "cpu"))
        expect = logits[0].float().softmax(-1)[pos - i * step].numpy()
        got = read_predictions(out, f"chr20:{pos + 1}-{pos + 1}").probs[0]
        assert np.allclose(got, expect, atol=2e-3), (pos, got, expect)


def test_stem_decoder_variant_model_region_alone_and_rc_average(variant_h5, tiny_variant_model, chr20, tmp_path):
    """The stem and decoder read each window's bases and reads alone: a region predicted alone, in other
    batches, equals the same bases inside the larger run; --rc-average adds the reverse strand's output."""
    model, meta, _ = load_checkpoint(tiny_variant_model)
    assert meta["per_base"] == PerBaseConfig().to_dict() and model.stem.evidence_in is not None
    region = "chr20:10,004,501-10,005,300"
    run(tiny_variant_model, chr20["fasta"], tmp_path / "alone.h5", bam=str(chr20["bam"]), regions=[region],
        batch_size=1)
    alone, inside = read_predictions(tmp_path / "alone.h5", region), read_predictions(variant_h5[0], region)
    assert alone.covered.all() and np.array_equal(alone.probs, inside.probs)

    run(tiny_variant_model, chr20["fasta"], tmp_path / "rc.h5", bam=str(chr20["bam"]), regions=[region],
        rc_average=True)
    averaged = read_predictions(tmp_path / "rc.h5", region)
    assert averaged.attrs["predict_config"]["rc_average"] is True
    # by hand for the window that holds base 10,004,600 (window 1536, margin 384: step 768)
    ref = Reference(chr20["fasta"])
    i = (10_004_600 - 384) // 768
    window = Window("chr20", i * 768, i * 768 + 1536, 1536)
    item = WindowDataset(ref, [], model.tokenizer, alignments=Alignments(chr20["bam"], ref))[window]
    model.eval().encoder.set_hash_seed(0)
    with torch.inference_mode():
        probs = [model(**batch_inputs({k: v[None] for k, v in it.items() if torch.is_tensor(v)}, "cpu"))[0].softmax(-1)
                 for it in (item, reverse_complement_item(item, model.tokenizer))]
    expect = (probs[0] + probs[1].flip(0)) / 2
    b = 10_004_600 - window.start
    np.testing.assert_allclose(averaged.probs[10_004_600 - 10_004_500], expect[b].numpy(), atol=2e-3)
    assert np.abs(averaged.probs - alone.probs).max() > 1e-3  # the reverse strand's output differs


def test_no_seams_region_alone_equals_inside_a_larger_run(tiny_pattern_model, chr20, tmp_path):
    # an odd region start and another batch size: the grid and the windows are the same
    run(tiny_pattern_model, chr20["fasta"], tmp_path / "small.h5", regions=["chr20:10,003,001-10,006,789"],
        batch_size=3)
    run(tiny_pattern_model, chr20["fasta"], tmp_path / "large.h5", regions=["chr20:10,000,001-10,012,000"],
        batch_size=8)
    small = read_predictions(tmp_path / "small.h5", "chr20:10,003,001-10,006,789")
    large = read_predictions(tmp_path / "large.h5", "chr20:10,003,001-10,006,789")
    assert small.covered.all() and large.covered.all()
    np.testing.assert_allclose(small.probs, large.probs, atol=1e-3, rtol=0)
    outside = read_predictions(tmp_path / "small.h5", "chr20:10,006,790-10,008,000")
    assert not outside.covered.any() and not outside.probs.any()

    # a BED of scattered intervals (0-based; two share a window, one overlaps another) writes exactly them
    bed = tmp_path / "regions.bed"
    bed.write_text("chr20\t10001000\t10001100\nchr20\t10001050\t10001200\nchr20\t10001500\t10001501\n"
                   "chr20\t10009000\t10010000\n")
    run(tiny_pattern_model, chr20["fasta"], tmp_path / "bed.h5", regions_bed=str(bed))
    got = read_predictions(tmp_path / "bed.h5", "chr20:10,000,001-10,012,000")
    whole = read_predictions(tmp_path / "large.h5", "chr20:10,000,001-10,012,000")
    expect = np.zeros(12_000, dtype=bool)
    for a, b in ((1000, 1200), (1500, 1501), (9000, 10_000)):
        expect[a:b] = True
    assert np.array_equal(got.covered, expect)
    np.testing.assert_allclose(got.probs[expect], whole.probs[expect], atol=1e-3, rtol=0)
    assert not got.probs[~expect].any()


def test_same_hash_seed_same_file_contents_another_seed_differs(tiny_pattern_model, chr20, tmp_path):
    kw = dict(regions=["chr20:10,000,001-10,004,000"])
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        run(tiny_pattern_model, chr20["fasta"], tmp_path / f"{name}.h5", hash_seed=seed, **kw)
    a, b, c = (read_predictions(tmp_path / f"{n}.h5", "chr20") for n in "abc")
    assert a.attrs["hash_seed"] == b.attrs["hash_seed"] == 7 and c.attrs["hash_seed"] == 8
    assert np.array_equal(a.probs, b.probs) and np.array_equal(a.covered, b.covered)
    assert not np.array_equal(a.probs, c.probs)  # the LSH layer hashes with other rotations


def test_whole_contigs_by_default_and_n_windows_computed_once(tiny_pattern_model, shared_data, chr20, tmp_path):
    fasta = shared_data / "sarscov2_mt192765" / "genome" / "genome.fasta"
    summary = run(tiny_pattern_model, fasta, tmp_path / "cov.h5")
    p = read_predictions(tmp_path / "cov.h5", "MT192765.1")
    assert len(p) == 29_829 and p.covered.all() and (p.probs > 0).all()
    assert summary["windows"] == math.ceil((29_829 - 384) / 768) and summary["bases"] == 29_829

    # chr20:1-20,000 is all N: every full window there is the same one, run through the model once
    summary = run(tiny_pattern_model, chr20["fasta"], tmp_path / "n.h5", regions=["chr20:1-20,000"], batch_size=4)
    assert summary["n_window_cached"] == summary["windows"] == 26
    p = read_predictions(tmp_path / "n.h5", "chr20:1-20,000").probs
    model, _, _ = load_checkpoint(tiny_pattern_model, hash_seed=0)
    model.eval()
    item = WindowDataset(Reference(chr20["fasta"]), [], model.tokenizer)[Window("chr20", 0, 1536, 1536)]
    assert set(model.tokenizer.decode(item["tokens"].numpy())) == {"N"}
    with torch.inference_mode():
        expect = model(**batch_inputs({k: v[None] for k, v in item.items() if torch.is_tensor(v)}, "cpu"))
    expect = expect[0].sigmoid().numpy()
    # bases 5,000-5,699 lie in the kept part of window 6, which starts at 6 * 768
    np.testing.assert_allclose(p[5_000:5_700], expect[5_000 - 6 * 768:5_700 - 6 * 768], atol=1e-3)


def _start_and_stop(args: list, out: Path, sig: int, after_windows: int, while_running=None):
    """Run `genoformer predict` and send `sig` once the partial records `after_windows` more windows done
    (calling `while_running()` first, if given)."""
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "genoformer", *map(str, args), "--out", str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    partial, first, done = partial_path(out), None, 0
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
        try:  # the writer is in SWMR mode, so a reader sees its flushed progress
            with h5py.File(partial, "r", swmr=True) as f:
                done = int(f["_progress/done"][:].sum())
        except (OSError, KeyError):
            continue
        first = done if first is None else first
        if done >= first + after_windows:
            break
    assert proc.poll() is None, "predict finished before it could be stopped; give it more windows"
    if while_running is not None:
        while_running()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


def test_sigterm_sigkill_then_resume_equals_an_uninterrupted_run(tiny_pattern_model, chr20, tmp_path):
    region = "chr20:10,000,001-10,060,000"  # 313 windows of 384 bases, one per batch: a few seconds
    args = ["predict", "--model", tiny_pattern_model, "--reference", chr20["fasta"], "--region", region,
            "--window", "384", "--margin", "96", "--batch-size", "1", "--no-progress"]
    out, partial = tmp_path / "killed.h5", partial_path(tmp_path / "killed.h5")
    def second_writer():  # a second run on the same output is refused while the first writes it
        with pytest.raises(OutputError, match="is writing"):
            run(tiny_pattern_model, chr20["fasta"], out, regions=[region], window=384, margin=96)

    # SIGTERM (a scheduler cancelling the job): exit 143, the partial kept for --resume
    proc = _start_and_stop(args, out, signal.SIGTERM, after_windows=5, while_running=second_writer)
    assert proc.returncode == 143 and "--resume" in proc.stderr, proc.stderr
    assert partial.exists() and not out.exists()
    # resumed, then SIGKILL: nothing to clean up, and still nothing at the final name
    proc = _start_and_stop(args + ["--resume"], out, signal.SIGKILL, after_windows=5)
    assert proc.returncode == -signal.SIGKILL and partial.exists() and not out.exists()
    with pytest.raises(InputError, match="incomplete"):
        read_predictions(partial, "chr20")

    # batch size is no part of a run's identity: predictions do not depend on it
    summary = run(tiny_pattern_model, chr20["fasta"], out, regions=[region], window=384, margin=96,
                  batch_size=16, resume=True)
    assert 10 <= summary["windows_resumed"] < summary["windows"] == summary["windows_resumed"] + summary["windows_run"]
    assert not partial.exists()
    run(tiny_pattern_model, chr20["fasta"], tmp_path / "whole.h5", regions=[region], window=384, margin=96,
        batch_size=7)
    with h5py.File(out, "r") as f, h5py.File(tmp_path / "whole.h5", "r") as g:
        for name in ("covered", "pattern/probs"):
            assert np.array_equal(f[f"contigs/chr20/{name}"][:], g[f"contigs/chr20/{name}"][:]), name

    # an unreadable partial (a kill before HDF5 wrote its header) is replaced, not resumed
    other = tmp_path / "other.h5"
    partial_path(other).write_bytes(b"")
    summary = run(tiny_pattern_model, chr20["fasta"], other, regions=["chr20:10,000,001-10,002,000"], resume=True)
    assert summary["windows_resumed"] == 0 and read_predictions(other, "chr20").covered.sum() == 2000


def test_resume_refuses_a_partial_of_another_run(tiny_pattern_model, chr20, tmp_path):
    out = tmp_path / "p.h5"
    with pytest.raises(KeyboardInterrupt):  # interrupted after its first batch: the partial stays
        _interrupt_after_first_batch(tiny_pattern_model, chr20, out)
    assert partial_path(out).exists() and not out.exists()
    with pytest.raises(UsageError, match="hash_seed"):
        run(tiny_pattern_model, chr20["fasta"], out, regions=["chr20:10,000,001-10,010,000"], batch_size=1,
            hash_seed=3, resume=True)
    summary = run(tiny_pattern_model, chr20["fasta"], out, regions=["chr20:10,000,001-10,010,000"], batch_size=1,
                  resume=True)
    assert summary["windows_resumed"] == 1 and read_predictions(out, "chr20:10,000,001-10,010,000").covered.all()


def _interrupt_after_first_batch(model, chr20, out):
    from genoformer.predict.writer import PredictionWriter

    original = PredictionWriter.mark_done

    def mark_then_interrupt(self, windows):
        original(self, windows)
        raise KeyboardInterrupt

    PredictionWriter.mark_done = mark_then_interrupt
    try:
        run(model, chr20["fasta"], out, regions=["chr20:10,000,001-10,010,000"], batch_size=1)
    finally:
        PredictionWriter.mark_done = original


def test_readers_refuse_incomplete_truncated_and_foreign_files(variant_h5, tmp_path):
    out, _ = variant_h5
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(out.read_bytes()[:4096])
    with pytest.raises(InputError, match="truncated.h5"):
        read_predictions(truncated, "chr20")
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(InputError, match="not a genoformer predictions file"):
        read_predictions(foreign, "chr20")
    unfinished = tmp_path / "unfinished.h5"
    unfinished.write_bytes(out.read_bytes())
    with h5py.File(unfinished, "r+") as f:
        f.attrs["complete"] = False
    with pytest.raises(InputError, match="incomplete"):
        open_predictions(unfinished)


# ---------------------------------------------------------------------------------------------
# bad input through the real CLI: one line, the contract's exit code, nothing at --out


def _fake_checkpoint(run_dir: Path, tokenizer, task: str, n_classes: int, window: int, nan: bool = False) -> Path:
    """A checkpoint written by the real save path (random weights; with `nan`, a head that outputs NaN)."""
    config = ReformerConfig(vocab_size=tokenizer.vocab_size, d_model=8, depth=1, heads=2, attention="full")
    model = GenoModel(config, tokenizer, task, n_classes=n_classes)
    if nan:
        with torch.no_grad():
            model.head.proj.bias.fill_(float("nan"))
    head = {"n_classes": n_classes, "n_evidence": 0, "class_names": ["c"] * n_classes}
    save_checkpoint(run_dir, model, {"step": 1, "head": head, "train_config": {"window": window}}, {})
    return run_dir


def cli_in_process(capsys, *args) -> subprocess.CompletedProcess:
    """genoformer.cli.main in this process (the same exception-to-exit-code path, without a torch import)."""
    from genoformer.cli import main

    capsys.readouterr()
    sigterm = signal.getsignal(signal.SIGTERM)
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code
    finally:
        signal.signal(signal.SIGTERM, sigterm)
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, out, err)


def test_bad_inputs_fail_cleanly(tiny_variant_model, tiny_pattern_model, chr20, tmp_path, capsys):
    fa, bam = chr20["fasta"], chr20["bam"]
    region = ("--region", "chr20:10,000,001-10,001,000")

    def cli(model, *extra, out=tmp_path / "out.h5", subprocess=False):
        args = ("predict", "--model", model, "--reference", fa, "--out", out, "--no-progress", *extra)
        proc = run_cli(*args) if subprocess else cli_in_process(capsys, *args)
        assert not Path(out).exists() and not partial_path(out).exists()
        return proc

    # two through a real process, the rest in this one
    assert_clean_failure(cli(tiny_variant_model, *region, subprocess=True), 2, "read evidence", "--bam")
    protein = _fake_checkpoint(tmp_path / "protein", ProteinTokenizer(1), "pattern", 1, 64)
    assert_clean_failure(cli(protein, *region, subprocess=True), 3, "protein", "DNA")
    assert_clean_failure(cli(protein, *region, "--rc-average"), 2, "rc-average", "protein")
    assert_clean_failure(cli(tiny_pattern_model, "--bam", bam, *region), 2, "without reads")
    assert_clean_failure(cli(tiny_pattern_model, "--region", "chr21:1-100"), 3, "chr21", "not found")
    assert_clean_failure(cli(tiny_pattern_model, "--region", "chr20:63,025,000-63,026,000"), 3, "past the end")
    assert_clean_failure(cli(tiny_pattern_model, "--region", "chr20:5-2"), 2, "start 5 is after end 2")
    assert_clean_failure(cli(tiny_pattern_model, *region, "--margin", "768"), 2, "margin 768 leaves no bases")
    assert_clean_failure(cli(chr20["fasta"].parent, *region), 3, "not a genoformer run folder")
    mlm = _fake_checkpoint(tmp_path / "mlm", ProteinTokenizer(1), "mlm", 0, 64)
    assert_clean_failure(cli(mlm, *region), 2, "mlm", "nothing per-base")
    broken = _fake_checkpoint(tmp_path / "nan", KmerTokenizer(3), "pattern", 1, 96, nan=True)
    assert_clean_failure(cli(broken, *region), 5, "non-finite predictions", "chr20:")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert_clean_failure(cli(tiny_pattern_model, *region, out=blocker / "out.h5"), 4, "cannot create")

    existing = tmp_path / "exists.h5"
    existing.write_bytes(b"keep me")
    proc = cli_in_process(capsys, "predict", "--model", tiny_pattern_model, "--reference", fa, "--out", existing,
                          *region)
    assert_clean_failure(proc, 4, "exists.h5", "already exists")
    assert existing.read_bytes() == b"keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder(tiny_pattern_model, chr20, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        proc = run_cli("predict", "--model", tiny_pattern_model, "--reference", chr20["fasta"],
                       "--region", "chr20:10,000,001-10,001,000", "--out", folder / "p.h5")
        assert_clean_failure(proc, 4, "not writable")
    finally:
        folder.chmod(0o700)
