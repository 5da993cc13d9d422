"""`genoformer attribute`: ISM against its brute-force definition (every change run through the model by
hand, windows laid out by hand), gradient x input against finite differences, the files, bad input, SIGTERM."""
from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pysam
import pytest
import torch

import genoformer
from genoformer.apply import attribute as attr
from genoformer.apply.attribute import Target
from genoformer.apply.model import load_model
from genoformer.coords import Interval
from genoformer.io.fasta import Reference
from genoformer.model.checkpoint import load_checkpoint

import by_hand

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from test_bad_inputs import assert_clean_failure, run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WINDOW, MARGIN = 192, 48  # the local_pattern_model's window and predict's default margin (k = stride = 3)


def run_model(model, seq: str, n_bases: int) -> np.ndarray:
    return by_hand.run_model(model, [seq], n_bases)[0]


def changed_base(contig: str, i: int, base: str) -> str:
    """`contig` with base i changed to `base`, in the reference base's case (its soft-mask bit stays)."""
    return contig[:i] + (base.lower() if contig[i].islower() else base) + contig[i + 1:]


def f_by_hand(model, contig: str, region: Interval) -> np.ndarray:
    """Sum over the region of each base's prediction from the window that keeps it: windows of WINDOW bases
    every WINDOW - 2 * MARGIN, each keeping its centre, the first from base 0, the last to the contig end."""
    step, length = WINDOW - 2 * MARGIN, len(contig)
    n = math.ceil((length - MARGIN) / step)
    total = 0
    for i in range(n):
        keep_start = 0 if i == 0 else i * step + MARGIN
        keep_end = length if i == n - 1 else (i + 1) * step + MARGIN
        a, b = max(keep_start, region.start), min(keep_end, region.end)
        if a < b:
            probs = run_model(model, contig[i * step:i * step + WINDOW], WINDOW)
            total = total + probs[a - i * step:b - i * step].sum(0)
    return total


@pytest.fixture(scope="module")
def ism_2kb(local_pattern_model, example, tmp_path_factory):
    out = tmp_path_factory.mktemp("attr") / "a"
    proc = run_cli("attribute", "--model", local_pattern_model, "--reference", example.reference,
                   "--region", "chrB:3,001-5,000", "--out", out, "--no-progress", "--batch-size", "64")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    # local attention only: each change runs the blocks of tokens it can reach (widened by the stem's and the
    # decoder's receptive fields), less than one of its two whole windows
    assert 0 < summary["ism_bases_run"] < 2000 * 3 * WINDOW
    return out


def test_ism_over_2kb_equals_the_brute_force_definition(ism_2kb, local_pattern_model, example):
    model, meta, _ = load_checkpoint(local_pattern_model)
    model.eval()
    with pysam.FastaFile(str(example.reference)) as fa:
        contig = fa.fetch("chrB")
    region = Interval("chrB", 3000, 5000)
    with h5py.File(f"{ism_2kb}.h5", "r") as f:
        assert bool(f.attrs["complete"]) and f.attrs["region"] == "chrB:3001-5000"
        assert list(f.attrs["classes"]) == meta["head"]["class_names"] and (f.attrs["window"], f.attrs["margin"]) == (
            WINDOW, MARGIN)
        ism, baseline = f["ism"][:], f["baseline"][:]
        assert f["reference"][:].tobytes().decode() == contig[3000:5000] and f["mutated"][:].all()
    assert ism.shape == (2000, 4, 2)
    reference_f = f_by_hand(model, contig, region)
    np.testing.assert_allclose(baseline, reference_f, rtol=1e-5)
    rng = np.random.default_rng(0)
    for i in [0, 1, 47, 48, 96, 1999] + list(rng.integers(0, 2000, 14)):
        ref_base = contig[3000 + i].upper()
        for x, base in enumerate("ACGT"):
            if base == ref_base:
                assert (ism[i, x] == 0).all()
                continue
            changed = changed_base(contig, 3000 + i, base)
            np.testing.assert_allclose(ism[i, x], f_by_hand(model, changed, region) - reference_f, atol=3e-6,
                                       err_msg=f"base {i} -> {base}")
    # the definition is predict's: the reference's f is the sum of what `genoformer predict` writes there
    predicted = Path(f"{ism_2kb}.pred.h5")
    assert run_cli("predict", "--model", local_pattern_model, "--reference", example.reference, "--region",
                   "chrB:3,001-5,000", "--out", predicted, "--no-progress").returncode == 0
    probs = genoformer.read_predictions(predicted, "chrB:3,001-5,000").probs
    np.testing.assert_allclose(probs.sum(0), reference_f, rtol=2e-3)


@pytest.mark.parametrize("start", [0, 10_000 - 40])
def test_ism_at_contig_ends_equals_the_brute_force_definition(start, local_pattern_model, example):
    """The first and last windows of a contig (one keeps from base 0, the last runs past the end, padded)."""
    am = load_model(str(local_pattern_model), "cpu")
    region = Interval("chrB", start, start + 40)
    with Reference(example.reference) as ref:
        inputs = attr.targets(am, ref, region, WINDOW, MARGIN, WINDOW - 2 * MARGIN)
        contig = ref.fetch("chrB", 0, 10_000).tobytes().decode()
    ism, baseline, _ = attr.ism(am, region, inputs, batch_size=64)
    reference_f = f_by_hand(am.model, contig, region)
    np.testing.assert_allclose(baseline, reference_f, rtol=1e-5)
    for i in range(40):
        for x, base in enumerate("ACGT"):
            if base != contig[start + i].upper():
                changed = changed_base(contig, start + i, base)
                np.testing.assert_allclose(ism[i, x], f_by_hand(am.model, changed, region) - reference_f, atol=3e-6)


def test_files_hold_the_same_importance(ism_2kb, local_pattern_model):
    classes = load_checkpoint(local_pattern_model)[1]["head"]["class_names"]
    with h5py.File(f"{ism_2kb}.h5", "r") as f:
        ism, grad = f["ism"][:], f["grad_input"][:]
        for method, changes in (("ism", ism), ("grad_input", grad)):
            importance = f[f"importance/{method}"][:]
            np.testing.assert_allclose(importance, -changes.sum(1) / 3, rtol=1e-6, atol=1e-9)
            for c, name in enumerate(classes):
                bedgraph = Path(f"{ism_2kb}.{method}.{name}.bedgraph")
                rows = [line.split("\t") for line in bedgraph.read_text().splitlines()]
                assert [(r[0], int(r[1]), int(r[2])) for r in rows] == [("chrB", p, p + 1) for p in range(3000, 5000)]
                np.testing.assert_allclose([float(r[3]) for r in rows], importance[:, c], rtol=1e-5, atol=1e-9)
    for name in classes:
        assert Path(f"{ism_2kb}.{name}.logo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def f_of_targets(model, inputs, delta=None, letters=None) -> np.ndarray:
    """f run by hand over attribute's inputs. Along a direction, per input: `delta` (tensor [T, d]) is added to
    its token embeddings (before the stem's part) and `letters` (tensor [n, letters]) to the one-hot letters
    its stem reads."""
    total = 0
    for j, t in enumerate(inputs):
        hooks = []
        if delta is not None:  # (the encoder pads the tokens past len(delta[j]))
            hooks.append(model.encoder.token_emb.register_forward_hook(
                lambda m, a, out, d=delta[j]: out + torch.nn.functional.pad(
                    d, (0, 0, 0, out.shape[1] - len(d)))[None].to(out.dtype), prepend=True))
        if letters is not None and model.stem is not None:  # the stem's input: [1, letters + soft mask, n_bases]
            hooks.append(model.stem.sequence_in.register_forward_pre_hook(
                lambda m, args, d=letters[j]: (args[0] + torch.nn.functional.pad(
                    d.T, (0, args[0].shape[2] - len(d), 0, 1))[None].to(args[0].dtype),)))
        try:
            probs = run_model(model, t.bases.tobytes().decode(), t.n_bases)
        finally:
            for hook in hooks:
                hook.remove()
        total = total + (probs * t.weights).reshape(-1, probs.shape[-1]).sum(0)
    return total


def one_hot(model, seq: np.ndarray) -> torch.Tensor:
    """[n, letters] float64: the one-hot letters the stem reads for a sequence."""
    codes = by_hand.model_inputs(model, [seq.tobytes().decode()], len(seq))["bases"][0]
    return torch.nn.functional.one_hot(codes, len(model.tokenizer.alphabet)).double()


@pytest.mark.parametrize("which", ["classify_model", "pattern_model"])
def test_ism_by_hand_and_grad_input_against_finite_differences(which, request, example):
    """classify: the region is the sequence; pattern: k=4 tokens every 2 bases, so each base is in two tokens,
    and the region's windows overlap (local then LSH attention). Both have the per-base stem, and the
    pattern model the decoder: a base enters through its tokens and as the stem's one-hot letter."""
    am = load_model(str(request.getfixturevalue(which)), "cpu")
    am.model.double()  # finite differences want more than float32's digits
    assert am.model.stem is not None
    region = Interval("chrA", 2000, 2060) if which == "classify_model" else Interval("chrA", 2110, 2150)
    with Reference(example.reference) as ref:
        inputs = attr.targets(am, ref, region, 256, 64, 128)
        seq = ref.fetch("chrA", region.start, region.end).tobytes().decode()
    assert len(inputs) == (1 if which == "classify_model" else 2)
    ism, baseline, _ = attr.ism(am, region, inputs, batch_size=50)
    grad = attr.grad_input(am, region, inputs)
    model, tok = am.model, am.tokenizer
    table = model.encoder.token_emb.weight.detach()
    np.testing.assert_allclose(baseline, f_of_targets(model, inputs), rtol=1e-6)
    for i in (0, 1, 2, 21, len(seq) - 1):
        for x, base in enumerate("ACGT"):
            if base == seq[i].upper():
                continue
            changed = [Target(t.start, t.bases.copy(), t.n_bases, t.weights) for t in inputs]
            for t in changed:
                o = region.start + i - t.start
                t.bases[o] = ord(base.lower() if chr(t.bases[o]).islower() else base)
            np.testing.assert_allclose(ism[i, x], f_of_targets(model, changed) - baseline, atol=1e-6)
            # the change of the embeddings and of the stem's one-hot letters when base i becomes x, and f along
            # it by central differences
            delta = [table[torch.from_numpy(tok.encode(c.bases))] - table[torch.from_numpy(tok.encode(t.bases))]
                     for c, t in zip(changed, inputs)]
            letters = [one_hot(model, c.bases) - one_hot(model, t.bases) for c, t in zip(changed, inputs)]
            assert all(int(d.abs().sum()) == 2 for d in letters)
            eps = 1e-4
            fd = (f_of_targets(model, inputs, [eps * d for d in delta], [eps * d for d in letters])
                  - f_of_targets(model, inputs, [-eps * d for d in delta], [-eps * d for d in letters])) / (2 * eps)
            np.testing.assert_allclose(grad[i, x], fd, rtol=1e-4, atol=1e-7, err_msg=f"{which}: base {i} -> {base}")
            # the stem's part is not negligible: the token embeddings alone miss it
            tokens_only = (f_of_targets(model, inputs, [eps * d for d in delta])
                           - f_of_targets(model, inputs, [-eps * d for d in delta])) / (2 * eps)
            assert np.abs(tokens_only - fd).max() > 1e-6


@pytest.mark.parametrize("case", ["too_long", "mlm", "no_matplotlib", "unknown_class"])
def test_bad_requests_get_one_line(case, local_pattern_model, mlm_model, example, tmp_path):
    base = ["attribute", "--reference", example.reference, "--out", tmp_path / "a", "--no-progress"]
    if case == "too_long":
        proc = run_cli(*base, "--model", local_pattern_model, "--region", "chrA:1-10,001")
        assert_clean_failure(proc, 2, "10,001 bases", "at most 10,000")
    elif case == "mlm":
        proc = run_cli(*base, "--model", mlm_model, "--region", "chrA:1-100")
        assert_clean_failure(proc, 2, "mlm model has no classes")
    elif case == "unknown_class":
        proc = run_cli(*base, "--model", local_pattern_model, "--region", "chrA:1-100", "--class", "enhancer")
        assert_clean_failure(proc, 2, "'enhancer' is not one of the model's")
    else:  # matplotlib missing: refused before any work, as an environment problem
        code = ("import sys; sys.modules['matplotlib'] = None; from genoformer.cli import main; "
                f"main({[str(a) for a in base] + ['--model', str(local_pattern_model), '--region', 'chrA:1-100']!r})")
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert_clean_failure(proc, 4, "matplotlib is not installed")
        assert "genoformer[plot]" in proc.stderr and "--no-logo" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_sigterm_exits_143_at_once_and_leaves_nothing(local_pattern_model, example, tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "genoformer", "attribute", "--model", str(local_pattern_model),
                             "--reference", str(example.reference), "--region", "chrA:10,001-20,000",
                             "--out", str(tmp_path / "a"), "--batch-size", "1", "--no-logo"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(iter(lambda: proc.stderr.read(1), "")), daemon=True)
    reader.start()  # drained all along: a full pipe would hold the process up, not the signal
    deadline = time.monotonic() + 120
    while "ism:" not in "".join(stderr):  # the ISM progress bar: mutated windows are running
        assert proc.poll() is None and time.monotonic() < deadline, "".join(stderr)
        time.sleep(0.05)
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 143 and time.monotonic() - sent < 2.5, "".join(stderr)
    assert list(tmp_path.iterdir()) == []
