"""`genoformer predict --sequences`: classify models on new sequences (FASTA, gzip FASTA, CSV), checked
against the model run by hand on each sequence alone; refusals of the wrong model kind; SIGTERM."""
from __future__ import annotations

import csv
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import genoformer
from genoformer.model.checkpoint import load_checkpoint

from by_hand import model_inputs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from test_bad_inputs import assert_clean_failure, run_cli  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def by_hand(model_dir: Path, sequence: str) -> np.ndarray:
    """The model on one sequence alone: softmax of its logits ([C], or [n, C] per residue)."""
    model, meta, _ = load_checkpoint(model_dir, hash_seed=0)
    model.eval()
    with torch.no_grad():
        logits = model(**model_inputs(model, [sequence], len(sequence)))[0]
    return logits.softmax(-1).numpy()


def rows(csv_path: Path) -> list[dict]:
    return list(csv.DictReader(csv_path.open()))


def test_per_sequence_probabilities_equal_the_model_alone_in_every_input_form(classify_model, dna_sequences,
                                                                              tmp_path):
    records = rows(dna_sequences)
    fasta = tmp_path / "in.fa"
    fasta.write_text("".join(f">s{i} label={r['label']}\n{r['seq'][:30]}\n{r['seq'][30:]}\n"
                             for i, r in enumerate(records)))
    with gzip.open(tmp_path / "in.fa.gz", "wt") as fh:
        fh.write(fasta.read_text())
    outputs = {}
    for name in ("in.fa", "in.fa.gz", dna_sequences):
        out = tmp_path / f"{Path(name).name}.h5"
        proc = run_cli("predict", "--model", classify_model, "--sequences", tmp_path / name, "--out", out,
                       "--batch-size", "7", "--no-progress")
        assert proc.returncode == 0, proc.stderr
        summary = json.loads(proc.stdout)
        assert summary["sequences"] == len(records) and summary["table"] == str(out.with_suffix(".tsv"))
        outputs[name] = out
    _, meta, _ = load_checkpoint(classify_model)
    classes = meta["head"]["class_names"]
    expect = np.stack([by_hand(classify_model, r["seq"]) for r in records])
    for name, out in outputs.items():
        with h5py.File(out, "r") as f:
            a = f.attrs
            assert (a["format"], a["format_version"], bool(a["complete"]), a["task"]) == \
                ("genoformer-sequence-predictions", 1, True, "classify")
            assert a["model_sha256"] == meta["weights_sha256"] and a["genoformer_version"] == genoformer.__version__
            assert list(a["classes"]) == classes and json.loads(a["config"])["batch_size"] == 7
            assert "predict --model" in a["command"] and a["window"] == 100
            assert list(f["length"][:]) == [len(r["seq"]) for r in records]
            assert [x.decode() for x in f["labels"][:]] == [r["label"] for r in records]
            np.testing.assert_allclose(f["probs"][:], expect, atol=1e-5)
        table = list(csv.DictReader(out.with_suffix(".tsv").open(), delimiter="\t"))
        assert [t["label"] for t in table] == [r["label"] for r in records]
        assert [t["predicted"] for t in table] == [classes[i] for i in expect.argmax(1)]
        np.testing.assert_allclose([[float(t[f"p_{c}"]) for c in classes] for t in table], expect, atol=1e-5)
    names = [t["id"] for t in csv.DictReader(outputs["in.fa"].with_suffix(".tsv").open(), delimiter="\t")]
    assert names == [f"s{i}" for i in range(len(records))]


def test_per_residue_labels_fasta_and_probabilities(residue_model, tmp_path):
    run, seqs = residue_model
    fasta = tmp_path / "unlabelled.fa"  # no labels at all: none are needed to predict
    fasta.write_text(seqs.read_text())
    out = tmp_path / "ss.h5"
    proc = run_cli("predict", "--model", run, "--sequences", fasta, "--out", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    lines = fasta.read_text().split()
    records = [(name[1:], seq) for name, seq in zip(lines[::2], lines[1::2])]
    classes = load_checkpoint(run)[1]["head"]["class_names"]
    labels = (out.parent / "ss.labels.fa").read_text().split()
    with h5py.File(out, "r") as f:
        assert f.attrs["task"] == "classify_residues" and "labels" not in f
        offsets = f["offsets"][:]
        for i, (name, seq) in enumerate(records):
            expect = by_hand(run, seq)
            np.testing.assert_allclose(f["probs"][offsets[i]:offsets[i + 1]], expect, atol=1e-5)
            assert labels[2 * i] == f">{name}"
            assert labels[2 * i + 1] == "".join(classes[j] for j in expect.argmax(1))


def test_the_per_base_path_gives_per_residue_softmax(residue_model, tmp_path):
    run, seqs = residue_model  # a per-residue model over a protein "reference": each record a contig
    out = tmp_path / "ref.h5"
    proc = run_cli("predict", "--model", run, "--reference", seqs, "--out", out, "--no-progress")
    assert proc.returncode == 0, proc.stderr
    with genoformer.open_predictions(out) as f:
        p = f.read("p0")
    assert np.allclose(p.probs.sum(1), 1, atol=2e-3)  # a softmax over H/E/C, as trained (not sigmoids)


def test_longer_than_the_window_is_refused_before_anything_is_written(classify_model, tmp_path):
    fasta = tmp_path / "long.fa"
    fasta.write_text(">ok\n" + "ACGT" * 10 + "\n>too_long\n" + "ACGT" * 26 + "\n")
    out = tmp_path / "o.h5"
    proc = run_cli("predict", "--model", classify_model, "--sequences", fasta, "--out", out)
    assert_clean_failure(proc, 3, "long.fa", "too_long", "104 residues", "window")
    assert not any(tmp_path.glob("o*")) and not any(tmp_path.glob(".o*"))


@pytest.mark.parametrize("case", ["pattern_with_sequences", "classify_with_reference", "bad_character",
                                  "reference_and_sequences", "existing_output"])
def test_wrong_model_kind_and_bad_input_get_one_line(case, classify_model, pattern_model, example, tmp_path):
    fasta = tmp_path / "s.fa"
    fasta.write_text(">a\nACGTACGTAC\n")
    out = tmp_path / "o.h5"
    base = ["predict", "--out", out, "--no-progress"]
    if case == "pattern_with_sequences":
        proc = run_cli(*base, "--model", pattern_model, "--sequences", fasta)
        assert_clean_failure(proc, 2, "pattern model", "--sequences is for classify")
    elif case == "classify_with_reference":
        proc = run_cli(*base, "--model", classify_model, "--reference", fasta)
        assert_clean_failure(proc, 2, "classify model labels whole sequences")
        assert "--sequences" in proc.stderr
    elif case == "bad_character":
        fasta.write_text(">a\nACGTQ\n")
        proc = run_cli(*base, "--model", classify_model, "--sequences", fasta)
        assert_clean_failure(proc, 3, "s.fa", "record a", "'Q'")
    elif case == "reference_and_sequences":
        proc = run_cli(*base, "--model", classify_model, "--sequences", fasta, "--reference", example.reference)
        assert_clean_failure(proc, 2, "--reference does not go with --sequences")
    else:
        out.write_text("old")
        proc = run_cli(*base, "--model", classify_model, "--sequences", fasta)
        assert_clean_failure(proc, 4, "already exists")
        assert out.read_text() == "old"
        assert run_cli(*base, "--model", classify_model, "--sequences", fasta, "--force").returncode == 0
        with h5py.File(out, "r") as f:
            assert bool(f.attrs["complete"])
    assert not (tmp_path / "o.tsv").exists() or case == "existing_output"


def sigterm_while_running(args: list, folder: Path) -> tuple[subprocess.CompletedProcess, float]:
    """Start `genoformer ARGS`, SIGTERM it once it writes (a partial file appears), and time the exit."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "genoformer", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    while not any(".partial" in p.name for p in folder.iterdir()):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # well inside the run
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr), time.monotonic() - sent


def test_sigterm_exits_143_at_once_and_leaves_nothing(classify_model, tmp_path):
    fasta = tmp_path / "many.fa"
    rng = np.random.default_rng(0)
    fasta.write_text("".join(f">s{i}\n{''.join(rng.choice(list('ACGT'), 90))}\n" for i in range(20_000)))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc, seconds = sigterm_while_running(["predict", "--model", classify_model, "--sequences", fasta,
                                           "--out", out_dir / "p.h5", "--batch-size", "1", "--no-progress"],
                                          out_dir)
    assert proc.returncode == 143, proc.stderr
    assert seconds < 2.5, seconds
    assert list(out_dir.iterdir()) == []  # no output, no temporary file
