"""The classify task on real data: Genomic Benchmarks promoters (one label per sequence) and FLIP
secondary structure (one label per residue); exact resume; --init-from an mlm checkpoint; bad input
through the CLI; and the pipelines/ recipes, each checked with --dry-run."""
from __future__ import annotations

import csv
import dataclasses
import gzip
import json
import math
import sys
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

from genoformer.cli import cli
from genoformer.errors import UsageError
from genoformer.model.checkpoint import load_checkpoint
from genoformer.model.heads import batch_inputs
from genoformer.data.sequences import read_sequences, split
from genoformer.simulate.genome import simulate
from genoformer.train import TrainConfig, resume, train

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from test_bad_inputs import assert_clean_failure  # noqa: E402
from test_loop import MLM_TRAIN, run_cli, train_losses  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(d_model=32, depth=2, heads=2, attention="full", bucket_size=32, lr=3e-3, warmup_steps=3,
            progress=False, device="cpu")
FLIP_MEMBERS = ("sequences", "sampled", "mask")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread; two OpenMP threads on a busy 2-core CI machine spin
    against each other (measured: 2.35 s against 0.055 s per step)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def fasta(text: str) -> dict[str, tuple[str, str]]:
    """id -> (header description, sequence) of a FASTA text, parsed here independently of genoformer."""
    out, name = {}, None
    for line in text.splitlines():
        if line.startswith(">"):
            name, _, desc = line[1:].partition(" ")
            out[name] = (desc, "")
        elif line.strip():
            out[name] = (out[name][0], out[name][1] + line.strip())
    return out


@pytest.fixture(scope="module")
def promoters(shared_data, tmp_path_factory) -> Path:
    """400 real promoter / non-promoter 251-mers (200 of each class) as a seq,label CSV."""
    source = shared_data / "genomic_benchmarks" / "human_nontata_promoters" / "sequences" / \
        "test_human_nontata_promoters.csv"
    rows = list(csv.DictReader(source.open()))
    picked = [r for r in rows if r["label"] == "0"][:200] + [r for r in rows if r["label"] == "1"][:200]
    path = tmp_path_factory.mktemp("promoters") / "promoters.csv"
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["seq", "label"])
        writer.writerows([r["seq"], r["label"]] for r in picked)
    return path


@pytest.fixture(scope="module")
def flip(shared_data, tmp_path_factory) -> Path:
    """FLIP secondary-structure splits unpacked (sequences, per-residue labels, resolved-residue mask)."""
    folder = tmp_path_factory.mktemp("flip")
    with zipfile.ZipFile(shared_data / "protein" / "flip_secondary_structure" / "splits.zip") as z:
        z.extractall(folder)
    return folder / "splits"


@pytest.fixture(scope="module")
def flip_small(flip, tmp_path_factory) -> dict[str, Path]:
    """The first 48 FLIP training chains, in FLIP's three files."""
    records = {m: fasta((flip / f"{m}.fasta").read_text()) for m in FLIP_MEMBERS}
    names = [n for n, (desc, _) in records["sampled"].items() if "SET=train" in desc][:48]
    folder = tmp_path_factory.mktemp("flip_small")
    for member, recs in records.items():
        (folder / f"{member}.fasta").write_text("".join(f">{n} {recs[n][0]}\n{recs[n][1]}\n" for n in names))
    return {m: folder / f"{m}.fasta" for m in FLIP_MEMBERS}


def test_the_documented_input_forms_read_alike(promoters, tmp_path):
    rows = list(csv.DictReader(promoters.open()))[195:205]  # five of each class
    expected = ([r["seq"] for r in rows], [r["label"] for r in rows])
    with gzip.open(tmp_path / "a.csv.gz", "wt") as fh:
        fh.write("id,label,sequence\n" + "".join(f"s{i},{r['label']},{r['seq']}\n" for i, r in enumerate(rows)))
    (tmp_path / "b.tsv").write_text("seq\tlabel\n" + "".join(f"{r['seq']}\t{r['label']}\n" for r in rows))
    (tmp_path / "c.fa").write_text("".join(f">s{i} source=gb label={r['label']}\n{r['seq'][:100]}\n{r['seq'][100:]}\n"
                                           for i, r in enumerate(rows)))
    (tmp_path / "d.fasta").write_text("".join(f">s{i}|{r['label']}\n{r['seq']}\n" for i, r in enumerate(rows)))
    for name in ("a.csv.gz", "b.tsv", "c.fa", "d.fasta"):
        seqs = read_sequences(str(tmp_path / name))
        assert (seqs.sequences, seqs.labels) == expected and not seqs.per_residue, name
    assert read_sequences(str(tmp_path / "c.fa")).names[:2] == read_sequences(str(tmp_path / "d.fasta")).names[:2]


def test_cb513_csv_reads_as_per_residue_labels(shared_data):
    seqs = read_sequences(str(shared_data / "protein" / "cb513" / "CB513_HHblits.csv"), label_field="dssp3")
    assert seqs.per_residue and len(seqs) == 511
    counts = Counter(label for labels in seqs.labels for label in labels)
    assert sum(map(len, seqs.sequences)) == 144_011 and counts == {"C": 63_084, "H": 49_006, "E": 31_921}


def val_losses(run_dir: Path) -> dict[tuple[int, str], float]:
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return {(int(r["step"]), r["metric"]): float(r["value"]) for r in rows if r["split"] == "val"}


def test_promoters_loss_falls_and_the_checkpoint_reproduces_validation_accuracy(promoters, tmp_path):
    config = TrainConfig.from_dict(TINY | dict(task="classify", sequences=str(promoters), k=3, batch_size=32,
                                               max_steps=40, val_every=40, out=str(tmp_path)))
    losses = list(train(config)["losses"].values())
    assert mean(losses[-5:]) < math.log(2) - 0.1, losses  # well under a coin flip's loss (the stem starts lower)
    logged = val_losses(tmp_path)
    assert logged[(40, "accuracy")] > 0.7  # 40 held-out sequences, two balanced classes

    # the split: 10 % of each class held out, seeded, disjoint from training
    seqs = read_sequences(str(promoters))
    train_idx, val_idx = split(seqs, 0.1, seed=0)
    labels = np.array([int(label) for label in seqs.labels])
    assert np.bincount(labels[val_idx]).tolist() == [20, 20] and not set(train_idx) & set(val_idx)

    model, meta, _ = load_checkpoint(tmp_path)
    assert meta["task"] == "classify" and meta["head"]["class_names"] == ["0", "1"]
    assert meta["train_config"]["alphabet"] == "dna" and meta["train_config"]["k"] == 3
    # validation accuracy recomputed from the loaded weights, one sequence at a time (no padding)
    from genoformer.data.datasets import SequenceDataset

    model.eval()
    right = 0
    ds = SequenceDataset(seqs.subset(list(val_idx)), model.tokenizer, ["0", "1"], window=1000)
    with torch.no_grad():
        for i, label in enumerate(labels[val_idx]):
            right += int(model(**batch_inputs(ds.collate([ds[i]]), "cpu")).argmax(-1)) == label
    assert right / len(val_idx) == pytest.approx(logged[(40, "accuracy")], abs=1e-6)


def test_padding_does_not_change_a_sequence_logits(promoters, tmp_path):
    """Pooling is over real tokens only: a short sequence batched with a long one scores as alone."""
    from genoformer.data.datasets import SequenceDataset

    seqs = read_sequences(str(promoters)).subset([0, 250])
    seqs.sequences[0] = seqs.sequences[0][:97]
    train(TrainConfig.from_dict(TINY | dict(task="classify", sequences=str(promoters), k=3, max_steps=1,
                                            out=str(tmp_path))))
    model = load_checkpoint(tmp_path)[0].eval()
    ds = SequenceDataset(seqs, model.tokenizer, ["0", "1"], window=1000)
    both = ds.collate([ds[0], ds[1]])
    assert both["tokens"].shape[1] == model.tokenizer.n_tokens(251) and both["token_mask"][0].sum() == 33
    with torch.no_grad():
        together = model(**batch_inputs(both, "cpu"))
        alone = [model(**batch_inputs(b, "cpu")) for b in (ds.collate([ds[0]]), ds.collate([ds[1]]))]
    torch.testing.assert_close(together, torch.cat(alone), atol=1e-5, rtol=1e-5)


def test_flip_secondary_structure_per_residue_loss_falls(flip_small, tmp_path):
    config = TrainConfig.from_dict(TINY | dict(
        task="classify", sequences=str(flip_small["sequences"]), residue_labels=str(flip_small["sampled"]),
        residue_mask=str(flip_small["mask"]), window=256, batch_size=8, max_steps=30, val_every=30,
        val_fraction=0.2, out=str(tmp_path)))
    losses = list(train(config)["losses"].values())
    assert mean(losses[-5:]) < mean(losses[:5]) - 0.1, losses
    logged = val_losses(tmp_path)
    assert logged[(30, "q3")] == logged[(30, "accuracy")] > 0.4  # three states; C is about 40 % of residues
    model, meta, _ = load_checkpoint(tmp_path)
    assert meta["task"] == "classify_residues" and meta["head"]["class_names"] == ["C", "E", "H"]
    assert type(model.tokenizer).__name__ == "ProteinTokenizer" and model.tokenizer.k == 1


def test_residue_labels_and_mask_reach_the_batch(flip_small):
    from genoformer.data.datasets import SequenceDataset
    from genoformer.tokenize import ProteinTokenizer

    seqs = read_sequences(str(flip_small["sequences"]), residue_labels=str(flip_small["sampled"]),
                          residue_mask=str(flip_small["mask"]))
    assert seqs.per_residue and len(seqs) == 48
    ds = SequenceDataset(seqs, ProteinTokenizer(1), ["C", "E", "H"], window=100)
    batch = ds.collate([ds[0], ds[1]])
    labels, masks = fasta(flip_small["sampled"].read_text()), fasta(flip_small["mask"].read_text())
    for b, name in enumerate(seqs.names[:2]):
        n = min(len(labels[name][1]), 100)
        expected = ["CEH".index(c) if m == "1" else -100 for c, m in zip(labels[name][1][:n], masks[name][1][:n])]
        assert batch["residue_labels"][b, :n].tolist() == expected
        assert (batch["residue_labels"][b, n:] == -100).all() and int(batch["valid"][b].sum()) == n


def test_classify_resume_after_a_clean_stop_repeats_the_uninterrupted_losses(flip_small, tmp_path):
    kw = TINY | dict(task="classify", sequences=str(flip_small["sequences"]), residue_labels=str(flip_small["sampled"]),
                     window=128, batch_size=4, max_steps=10, ckpt_every=100)
    full = train(TrainConfig.from_dict(kw | dict(out=str(tmp_path / "full"))))["losses"]
    half = train(TrainConfig.from_dict(kw | dict(out=str(tmp_path / "half"), stop_after=5)))["losses"]
    assert half == {s: full[s] for s in range(1, 6)}
    resumed = resume(tmp_path / "half", progress=False)["losses"]
    assert resumed == {s: full[s] for s in range(6, 11)}  # bitwise equal on CPU
    assert train_losses(tmp_path / "half") == train_losses(tmp_path / "full")


def test_init_from_an_mlm_checkpoint_when_the_tokenizers_match(chr20, promoters, tmp_path):
    train(TrainConfig.from_dict(TINY | dict(task="mlm", reference=str(chr20["fasta"]), train_regions=[MLM_TRAIN],
                                            window=256, k=3, batch_size=2, max_steps=2, out=str(tmp_path / "mlm"))))
    mlm = load_checkpoint(tmp_path / "mlm")[0]
    config = TrainConfig.from_dict(TINY | dict(task="classify", sequences=str(promoters),
                                               init_from=str(tmp_path / "mlm"), max_steps=1, lr=1e-9,
                                               out=str(tmp_path / "init")))
    train(config)  # k comes from the checkpoint; one step at a negligible learning rate
    init = load_checkpoint(tmp_path / "init")[0]
    assert init.tokenizer == mlm.tokenizer
    for name, weight in mlm.encoder.state_dict().items():
        torch.testing.assert_close(init.encoder.state_dict()[name], weight, atol=1e-6, rtol=0)
    with pytest.raises(UsageError, match="k 6 / stride None differ"):
        train(dataclasses.replace(config, k=6, out=str(tmp_path / "k6")))


def test_a_protein_mlm_initialises_per_residue_classify_but_not_dna(flip_small, promoters, tmp_path):
    chains = fasta(flip_small["sequences"].read_text())
    reference = tmp_path / "chains.fa"
    reference.write_text("".join(f">{name}\n{seq}\n" for name, (_, seq) in chains.items()))
    train(TrainConfig.from_dict(TINY | dict(task="mlm", alphabet="protein", reference=str(reference), window=128,
                                            batch_size=2, max_steps=2, out=str(tmp_path / "mlm"))))
    mlm = load_checkpoint(tmp_path / "mlm")[0]
    assert type(mlm.tokenizer).__name__ == "ProteinTokenizer" and mlm.tokenizer.k == 1
    config = TrainConfig.from_dict(TINY | dict(task="classify", sequences=str(flip_small["sequences"]),
                                               residue_labels=str(flip_small["sampled"]), window=128, batch_size=4,
                                               init_from=str(tmp_path / "mlm"), max_steps=1, lr=1e-9,
                                               out=str(tmp_path / "init")))
    train(config)
    init = load_checkpoint(tmp_path / "init")[0]
    for name, weight in mlm.encoder.state_dict().items():
        torch.testing.assert_close(init.encoder.state_dict()[name], weight, atol=1e-6, rtol=0)
    with pytest.raises(UsageError, match="tokenizer reads protein but the classify inputs are dna"):
        train(TrainConfig(task="classify", sequences=str(promoters),
                          init_from=str(tmp_path / "mlm"), out=str(tmp_path / "dna")))


@pytest.fixture(scope="module")
def bad_inputs(promoters, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad")
    rows = promoters.read_text().splitlines()
    (folder / "no_label.csv").write_text("\n".join(["seq,class"] + rows[1:]) + "\n")
    bad = rows[1:3] + ["GATTACAQGATTACA,1"] + rows[-3:]
    (folder / "bad_char.csv").write_text("\n".join(["seq,label"] + bad) + "\n")
    (folder / "one_class.csv").write_text("\n".join(rows[:101]) + "\n")
    (folder / "protein.fa").write_text(">p1 label=a\nMKTAYIAKQRQISFVKSHFSRQ\n>p2 label=b\nMKT1AYIAK\n")
    return folder


@pytest.mark.parametrize("case", ["csv_without_label_column", "invalid_dna_character", "invalid_protein_character",
                                  "single_class", "val_fraction_out_of_range"])
def test_bad_input_through_the_cli(bad_inputs, promoters, tmp_path, case):
    args = ["train", "--task", "classify", "--max-steps", 1, "--d-model", 32, "--depth", 2, "--heads", 2,
            "--no-progress", "--out", tmp_path / "run"]
    if case == "csv_without_label_column":
        assert_clean_failure(run_cli(*args, "--sequences", bad_inputs / "no_label.csv"), 3,
                             "no_label.csv", "no 'label' label column", "seq, class")
    elif case == "invalid_dna_character":
        assert_clean_failure(run_cli(*args, "--sequences", bad_inputs / "bad_char.csv"), 3,
                             "bad_char.csv", "line 4", "'Q' at offset 7", "dna")
    elif case == "invalid_protein_character":
        assert_clean_failure(run_cli(*args, "--sequences", bad_inputs / "protein.fa", "--val-fraction", 0), 3,
                             "protein.fa", "record p2", "'1' at offset 3", "protein")
    elif case == "single_class":
        assert_clean_failure(run_cli(*args, "--sequences", bad_inputs / "one_class.csv", "--dry-run"), 3,
                             "one_class.csv", "only one class", "'0'")
    else:
        assert_clean_failure(run_cli(*args, "--sequences", promoters, "--val-fraction", 1.5), 2,
                             r"val-fraction must be a number in \[0, 1\), got 1.5")
    assert not (tmp_path / "run").exists()


def test_inputs_of_another_task_are_refused(promoters, chr20, tmp_path):
    config = TrainConfig(task="classify", sequences=str(promoters), reference=str(chr20["fasta"]), out=str(tmp_path))
    with pytest.raises(UsageError, match="task classify does not use --reference"):
        train(config)
    with pytest.raises(UsageError, match="task mlm does not use --sequences"):
        train(dataclasses.replace(config, task="mlm"))


def invoke(*args) -> dict:
    """`genoformer train ARGS` in this process (the Click command itself), returning its JSON output."""
    result = CliRunner().invoke(cli, ["train", *map(str, args)])
    assert result.exit_code == 0, (result.output, result.exception)
    return json.loads(result.stdout)


def test_composition_k_through_the_cli_trains_the_kmer_weights_and_is_refused_off_dna(promoters, tmp_path):
    args = ["--task", "classify", "--k", 3, "--d-model", 32, "--depth", 2, "--heads", 2, "--attention", "full",
            "--batch-size", 8, "--max-steps", 2, "--no-progress"]
    invoke(*args, "--sequences", promoters, "--composition-k", 4, "--out", tmp_path / "run")
    model, meta, _ = load_checkpoint(tmp_path / "run")
    assert meta["per_base"]["composition_k"] == 4
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model"]["composition_k"] == 4
    assert model.head.composition.weight.weight.abs().sum() > 0  # it starts at zero: two steps moved it
    (tmp_path / "protein.fa").write_text(">p1 label=a\nMKTAYIAKQRQISFVKSHFSRQ\n>p2 label=b\nMKTAYIAKQ\n")
    assert_clean_failure(run_cli("train", *args, "--sequences", tmp_path / "protein.fa", "--val-fraction", 0,
                                 "--composition-k", 3, "--out", tmp_path / "protein"), 2,
                         "composition-k adds the k-mer composition to a per-sequence head of DNA", "protein")
    assert_clean_failure(run_cli("train", *args, "--sequences", promoters, "--composition-k", 9,
                                 "--out", tmp_path / "nine"), 2, "composition-k must be an integer from 0", "9")
    assert not (tmp_path / "protein").exists() and not (tmp_path / "nine").exists()


RECIPES = sorted(p.stem for p in (ROOT / "pipelines").glob("*.yaml"))


def test_every_task_has_a_recipe():
    assert {"pretrain-mlm", "variant", "pattern-repeats", "pattern-bed", "classify-dna", "classify-protein"} <= \
        set(RECIPES)


@pytest.fixture(scope="module")
def simulated(tmp_path_factory) -> Path:
    """The simulated example (`genoformer simulate --out example`), for the recipe that learns soft-masking."""
    return simulate(tmp_path_factory.mktemp("sim") / "example", 0).reference.parent


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_validates_with_dry_run(recipe, shared_data, flip, simulated, tmp_path):
    """Each recipe, paths pointed at the real data, checks out without training; real defaults kept."""
    data = f"{shared_data}/"
    raw = (ROOT / "pipelines" / f"{recipe}.yaml").read_text()
    text = raw.replace("../shared/data/", data).replace("data/flip/splits/", f"{flip}/")
    text = text.replace("reference: example/", f"reference: {simulated}/")
    (tmp_path / "recipe.yaml").write_text(text)
    report = invoke("--config", tmp_path / "recipe.yaml", "--out", tmp_path / "run", "--dry-run")
    config, written = report["config"], yaml.safe_load(raw)
    assert (config["model"]["d_model"], config["model"]["depth"]) == (written["d-model"], written["depth"])
    assert report["parameters"] > (1_000_000 if written["d-model"] == 256 else 50_000)
    assert not (tmp_path / "run").exists()  # a dry run writes nothing
    if config["task"] == "classify":
        data = recipe.removesuffix("-cpu")  # a CPU recipe reads its GPU recipe's data
        assert report["classes"] == (["0", "1"] if data == "classify-dna" else ["C", "E", "H"])
        expected = {"classify-dna": (7227, 1807), "classify-protein": (9712, 1080)}[data]
        assert (report["data"]["train_sequences"], report["data"]["val_sequences"]) == expected
    else:  # one training region each: the window is clipped to it
        assert config["window"] == min(written["window"], report["data"]["train_bases"])
        assert report["data"]["train_bases"] > 50_000 and report["estimate"]["seconds_per_step"] > 0
        for split, counts in report["data"].get("label_counts", {}).items():
            assert sum(list(counts.values())[1:] if config["task"] == "variant" else counts.values()), split


def test_a_recipe_trains_a_few_steps_with_tiny_overrides(shared_data, promoters, tmp_path):
    text = (ROOT / "pipelines" / "classify-dna.yaml").read_text()
    (tmp_path / "recipe.yaml").write_text(text.replace("../shared/data/", f"{shared_data}/"))
    done = invoke("--config", tmp_path / "recipe.yaml", "--sequences", promoters, "--d-model", 32, "--depth", 2,
                  "--heads", 2, "--k", 3, "--attention", "full", "--batch-size", 8, "--max-steps", 3,
                  "--no-progress", "--out", tmp_path / "run")
    assert done["step"] == 3
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["val_fraction"], saved["model"]["d_model"], saved["sequences"]) == (0.2, 32, str(promoters))
    assert len(train_losses(tmp_path / "run")) == 3
