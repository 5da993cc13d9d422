"""Tiny models of every kind apply/ serves, trained a few steps on data the tests make (no shared data)."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

TINY = dict(d_model=16, depth=2, heads=2, bucket_size=16, n_hashes=2, lr=3e-3, warmup_steps=1, batch_size=2,
            max_steps=3, val_every=1000, ckpt_every=1000, progress=False, device="cpu")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # tiny models: OpenMP threads on a shared 2-core machine only wait for each other
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _train(out: Path, **kw) -> Path:
    from genoformer.train import TrainConfig, train

    train(TrainConfig.from_dict(TINY | kw | {"out": str(out)}))
    return out


@pytest.fixture(scope="session")
def example(tmp_path_factory):
    """A simulated genome (chrA 20 kb, chrB 10 kb) with planted motifs (motifs.bed)."""
    from genoformer.simulate.genome import simulate

    return simulate(tmp_path_factory.mktemp("sim") / "example", seed=3,
                    contigs=(("chrA", 20_000), ("chrB", 10_000)), coverage=0.2)


@pytest.fixture(scope="session")
def pattern_model(example, tmp_path_factory) -> Path:
    """pattern on the motif track: k=4 tokens every 2 bases (overlapping), local then LSH attention, window 256."""
    return _train(tmp_path_factory.mktemp("models") / "pattern", task="pattern", reference=str(example.reference),
                  bed=[str(example.motifs_bed)], window=256, k=4, stride=2, attention=["local", "lsh"])


@pytest.fixture(scope="session")
def local_pattern_model(example, tmp_path_factory) -> Path:
    """pattern with only local attention (blocks of 4 tokens), k=3, two classes: ISM runs pieces of windows."""
    return _train(tmp_path_factory.mktemp("models") / "pattern_local", task="pattern",
                  reference=str(example.reference), bed=[str(example.motifs_bed), str(example.cpg_islands_bed)],
                  window=192, k=3, attention="local", bucket_size=4)


@pytest.fixture(scope="session")
def mlm_model(example, tmp_path_factory) -> Path:
    """mlm with overlapping 3-mers (stride 1): a changed base sits in three tokens; per base (the decoder's letters)."""
    return _train(tmp_path_factory.mktemp("models") / "mlm", task="mlm", reference=str(example.reference),
                  window=256, k=3, stride=1, attention="full")


@pytest.fixture(scope="session")
def token_mlm_model(example, tmp_path_factory) -> Path:
    """mlm as before the per-base decoder (the stem kept): token logits over 3-mers, stride 1."""
    return _train(tmp_path_factory.mktemp("models") / "token_mlm", task="mlm", reference=str(example.reference),
                  window=256, k=3, stride=1, attention="full", decoder=False)


def _dna_sequences(path: Path, n: int, seed: int) -> Path:
    """seq,label CSV: random 40-100 bp sequences, label 1 where GC > 0.5."""
    rng = np.random.default_rng(seed)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["seq", "label"])
        for _ in range(n):
            gc = rng.uniform(0.2, 0.8)
            seq = "".join(rng.choice(list("ACGT"), p=[(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2],
                                     size=int(rng.integers(40, 101))))
            writer.writerow([seq, int(gc > 0.5)])
    return path


@pytest.fixture(scope="session")
def dna_sequences(tmp_path_factory) -> Path:
    return _dna_sequences(tmp_path_factory.mktemp("seqs") / "gc.csv", 60, seed=1)


@pytest.fixture(scope="session")
def classify_model(dna_sequences, tmp_path_factory) -> Path:
    """classify, one label per sequence, window 100 (the longest sequence it accepts), LSH attention, and the
    4-mer composition term (so every applied path runs it)."""
    from genoformer.model.checkpoint import load_checkpoint

    run = _train(tmp_path_factory.mktemp("models") / "classify", task="classify", sequences=str(dna_sequences),
                 window=100, k=3, attention="lsh", bucket_size=8, composition_k=4)
    assert load_checkpoint(run)[0].head.composition.weight.weight.abs().sum() > 0  # trained away from zero
    return run


@pytest.fixture(scope="session")
def residue_model(tmp_path_factory) -> tuple[Path, Path]:
    """classify per residue (protein, 3 classes H/E/C): (run folder, its sequence FASTA)."""
    folder = tmp_path_factory.mktemp("protein")
    rng = np.random.default_rng(2)
    letters = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    with (folder / "seqs.fa").open("w") as seqs, (folder / "labels.fa").open("w") as labels:
        for i in range(30):
            n = int(rng.integers(20, 61))
            seqs.write(f">p{i}\n{''.join(rng.choice(letters, n))}\n")
            labels.write(f">p{i}\n{''.join(rng.choice(list('HEC'), n))}\n")
    run = _train(folder / "run", task="classify", sequences=str(folder / "seqs.fa"),
                 residue_labels=str(folder / "labels.fa"), window=64, k=1, attention="full")
    return run, folder / "seqs.fa"
