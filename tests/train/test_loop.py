"""Training on real data (chr20 reference, NA12878 reads + GIAB truth): loss falls, checkpoints load,
resume is exact (clean stop and SIGKILL), bad input through the CLI fails with one line."""
from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from genoformer.io.variant_classes import VARIANT_CLASSES
from genoformer.data.datasets import WindowDataset
from genoformer.errors import CheckpointError
from genoformer.model.checkpoint import load_checkpoint, resolve
from genoformer.io.evidence import EVIDENCE_FEATURES
from genoformer.io.fasta import Reference
from genoformer.model.heads import batch_inputs
from genoformer.model.per_base import PerBaseConfig
from genoformer.train import TrainConfig, resume, train
from genoformer.train.losses import forward_loss
from genoformer.data.windows import tile
from genoformer.simulate.genome import simulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from test_bad_inputs import assert_clean_failure  # noqa: E402

MLM_TRAIN, MLM_VAL = "chr20:10,000,001-10,900,000", "chr20:10,950,001-10,960,000"
TINY = dict(window=512, k=3, d_model=32, depth=2, heads=2, attention="full", bucket_size=32, lr=3e-3,
            warmup_steps=3, batch_size=4, progress=False)


def mlm_config(chr20, out, **kw) -> TrainConfig:
    """A token-level mlm (no stem, no decoder: masked k-mers are the targets); per-base mlm: test_per_base.py."""
    return TrainConfig.from_dict(TINY | dict(task="mlm", reference=str(chr20["fasta"]), train_regions=[MLM_TRAIN],
                                             out=str(out), stem=False, decoder=False) | kw)


def train_losses(run_dir: Path) -> dict[int, float]:
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    return {int(r["step"]): float(r["value"]) for r in rows if r["split"] == "train" and r["metric"] == "loss"}


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def test_mlm_loss_falls_and_the_checkpoint_reproduces_validation(chr20, tmp_path):
    summary = train(mlm_config(chr20, tmp_path, max_steps=30, window=256, val_regions=[MLM_VAL], val_every=15,
                                 ckpt_every=10))
    losses = list(summary["losses"].values())
    assert len(losses) == 30 and all(map(torch.isfinite, torch.tensor(losses)))
    assert mean(losses[-5:]) < mean(losses[:5]) - 0.3, losses
    assert train_losses(tmp_path) == pytest.approx(summary["losses"], rel=1e-5)

    folder = resolve(tmp_path)
    assert folder.name == "step-00000030"
    meta = json.loads((folder / "checkpoint.json").read_text())
    assert meta["weights_sha256"] == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    model, meta, state = load_checkpoint(tmp_path, with_state=True)
    assert meta["step"] == 30 and state["sampler"]["consumed"] == 30 * 4
    # the loaded weights give the validation loss that training logged at step 30
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    logged = {r["metric"]: float(r["value"]) for r in rows if r["split"] == "val" and r["step"] == "30"}
    ref = Reference(chr20["fasta"])
    windows = tile([ref.region(MLM_VAL)], 256, contig_lengths=ref.contigs)[:8]
    ds = WindowDataset(ref, windows, model.tokenizer)
    gen = torch.Generator().manual_seed(0)
    model.eval()
    with torch.no_grad():
        batches = [[ds[j] for j in range(i, min(i + 4, len(ds)))] for i in range(0, len(ds), 4)]
        stacked = [{k: torch.stack([it[k] for it in b]) for k in ("tokens", "token_mask", "valid")} for b in batches]
        val = mean(float(forward_loss(model, "mlm", b, torch.device("cpu"), generator=gen)[0]) for b in stacked)
    assert val == pytest.approx(logged["loss"], rel=1e-4)
    assert json.loads((tmp_path / "summary.json").read_text())["step"] == 30
    # learning rate of each step: linear warm-up over 3 steps, then cosine from 3e-3 down to 3e-4
    lrs = {int(r["step"]): float(r["value"]) for r in rows if r["metric"] == "lr"}
    for s in range(1, 31):
        expected = 3e-3 * (s / 4 if s <= 3 else 0.1 + 0.45 * (1 + math.cos(math.pi * (s - 4) / 27)))
        assert lrs[s] == pytest.approx(expected, rel=1e-4), s


def test_variant_loss_falls_with_read_evidence(chr20, tmp_path):
    summary = train(TrainConfig.from_dict(TINY | dict(
        task="variant", reference=str(chr20["fasta"]), bam=str(chr20["bam"]), truth_vcf=str(chr20["vcf"]),
        train_regions=["chr20:10,010,532-10,100,000"], window=256, batch_size=2, max_steps=24, class_weights="none",
        out=str(tmp_path))))
    losses = list(summary["losses"].values())
    assert mean(losses[-5:]) < 0.5 * mean(losses[:5]), losses
    model, meta, _ = load_checkpoint(tmp_path)
    assert meta["head"] == {"n_classes": len(VARIANT_CLASSES), "n_evidence": len(EVIDENCE_FEATURES),
                            "evidence_features": list(EVIDENCE_FEATURES), "class_names": list(VARIANT_CLASSES)}
    assert meta["per_base"] == PerBaseConfig().to_dict()  # stem and decoder by default
    assert model.fusion is None and model.stem.evidence_in.weight.abs().sum() > 0


def test_pattern_on_gff_genes_initialised_from_an_mlm_checkpoint(chr20, shared_data, tmp_path):
    train(mlm_config(chr20, tmp_path / "mlm", max_steps=2))
    mlm, _, _ = load_checkpoint(tmp_path / "mlm")
    genome = shared_data / "sarscov2_mt192765" / "genome"
    config = TrainConfig.from_dict(TINY | dict(
        task="pattern", reference=str(genome / "genome.fasta"), bed=[str(genome / "genome.gff3")],
        init_from=str(tmp_path / "mlm"), out=str(tmp_path / "pattern")))
    # one step at a negligible learning rate: the encoder is still the pre-trained one
    train(dataclasses.replace(config, max_steps=1, lr=1e-9, out=str(tmp_path / "init")))
    init, meta, _ = load_checkpoint(tmp_path / "init")
    rows = [ln.split("\t") for ln in (genome / "genome.gff3").read_text().splitlines() if not ln.startswith("#")]
    assert meta["head"]["class_names"] == list(dict.fromkeys(r[2] for r in rows if len(r) > 2))
    for name, weight in mlm.encoder.state_dict().items():
        torch.testing.assert_close(init.encoder.state_dict()[name], weight, atol=1e-6, rtol=0)
    losses = list(train(dataclasses.replace(config, max_steps=20, batch_size=2))["losses"].values())
    assert mean(losses[-5:]) < mean(losses[:5]) - 0.2, losses


def test_pattern_on_soft_masked_repeats_needs_no_extra_file(tmp_path):
    # the simulated genome: lowercase repeats (the chr20 test reference has no lowercase base)
    example = simulate(tmp_path / "example", 0, contigs=(("chrA", 20000),))
    summary = train(TrainConfig.from_dict(TINY | dict(task="pattern", reference=str(example.reference),
                                                      window=256, max_steps=20, out=str(tmp_path / "run"))))
    losses = list(summary["losses"].values())
    assert mean(losses[-5:]) < mean(losses[:5]) - 0.1, losses
    model, meta, _ = load_checkpoint(tmp_path / "run")
    assert meta["head"]["class_names"] == ["soft_masked"]
    # the label is the soft mask: the stem must not read it, or the model learns the identity
    assert meta["per_base"]["soft_mask_input"] is False
    ref = Reference(example.reference)
    item = WindowDataset(ref, tile([ref.region("chrA:1-256")], 256, contig_lengths=ref.contigs), model.tokenizer)[0]
    batch = {key: value[None] for key, value in item.items() if isinstance(value, torch.Tensor)}
    model.eval()
    with torch.no_grad():
        outputs = [model(**batch_inputs(batch | {"soft_mask": torch.full_like(batch["soft_mask"], masked)},
                                        torch.device("cpu"))) for masked in (False, True)]
    assert torch.equal(outputs[0], outputs[1])


def test_resume_after_a_clean_stop_repeats_the_uninterrupted_losses(chr20, tmp_path):
    full = train(mlm_config(chr20, tmp_path / "full", max_steps=12, ckpt_every=100))["losses"]
    half = train(mlm_config(chr20, tmp_path / "half", max_steps=12, stop_after=6, ckpt_every=100))["losses"]
    assert half == {s: full[s] for s in range(1, 7)}
    resumed = resume(tmp_path / "half", progress=False)["losses"]
    assert resumed == {s: full[s] for s in range(7, 13)}  # bitwise equal on CPU
    assert train_losses(tmp_path / "half") == train_losses(tmp_path / "full")


def test_weight_average_is_the_exponential_average_of_the_trained_weights_and_resumes_exactly(chr20, tmp_path):
    """--ema 0.6: the checkpoint holds e_t = 0.6 e_(t-1) + 0.4 w_t (e_1 = w_1) of the trained weights w_t, which
    ride in its state; each w_t is read from a run stopped after step t (the schedule spans the same 4 steps).
    A run stopped at step 2 and resumed ends with the weights and losses of the run that never stopped."""
    def run(name: str, **kw) -> dict:
        return train(mlm_config(chr20, tmp_path / name, max_steps=4, ckpt_every=100, ema=0.6, **kw))

    trained = []
    for t in (1, 2, 3, 4):
        run(f"stop{t}", stop_after=t)
        _, _, state = load_checkpoint(tmp_path / f"stop{t}", with_state=True)
        assert state["ema"]["updates"] == t
        trained.append(state["ema"]["trained_weights"])
    expected = dict(trained[0])
    for w in trained[1:]:
        expected = {name: 0.6 * expected[name] + 0.4 * w[name] if w[name].is_floating_point() else w[name]
                    for name in w}
    full = run("full")
    averaged = load_checkpoint(tmp_path / "full")[0].state_dict()
    for name, value in expected.items():
        torch.testing.assert_close(averaged[name], value, rtol=1e-5, atol=1e-6)
    assert not all(torch.equal(averaged[name], trained[-1][name]) for name in expected)  # not the last weights
    resumed = resume(tmp_path / "stop2", max_steps=4, stop_after=4, progress=False)
    assert resumed["losses"] == {s: full["losses"][s] for s in (3, 4)}
    assert resumed["weights_sha256"] == full["weights_sha256"]  # the average, bitwise on CPU


DDP_SCRIPT = """
import json, sys
from genoformer.train import TrainConfig, train
config = TrainConfig.from_dict(json.loads(sys.argv[1]))
summary = train(config)
print("RESULT", json.dumps({"ranks": summary["ranks"], "sha": summary["weights_sha256"], "losses": summary["losses"]}))
"""


def test_torchrun_two_ranks_match_one_process_with_the_combined_batch(chr20, shared_data, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    # pattern on full windows: every rank's mean loss covers equally many bases, so the mean of the
    # ranks' gradients is the gradient of one process reading both halves of the batch
    kw = TINY | dict(task="pattern", reference=str(chr20["fasta"]), train_regions=[MLM_TRAIN], window=256,
                     bed=[str(shared_data / "annotations_hg19" / "cpg_islands_hg19_ucsc.txt")], max_steps=4, ckpt_every=2)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script),
                           json.dumps(kw | dict(batch_size=2, out=str(tmp_path / "ddp")))],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(line.split(" ", 1)[1]) for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert len(results) == 2 and all(r["ranks"] == 2 for r in results)
    assert results[0]["sha"] == results[1]["sha"]  # both ranks hold identical weights
    meta = json.loads((resolve(tmp_path / "ddp") / "checkpoint.json").read_text())
    assert meta["weights_sha256"] == results[0]["sha"]
    single = train(TrainConfig.from_dict(kw | dict(batch_size=4, out=str(tmp_path / "one"))))["losses"]
    ddp = {int(s): v for s, v in results[0]["losses"].items()}
    assert ddp == pytest.approx(single, rel=1e-4, abs=1e-6)


def run_cli(*args, **kw) -> subprocess.Popen | subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    return subprocess.run([sys.executable, "-m", "genoformer", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120, **kw)


def cli_args(chr20, out, *extra) -> list[str]:
    return ["train", "--reference", chr20["fasta"], "--train-regions", MLM_TRAIN, "--window", 512, "--k", 3,
            "--d-model", 32, "--depth", 2, "--heads", 2, "--attention", "full", "--bucket-size", 32, "--lr", 3e-3,
            "--warmup-steps", 3, "--batch-size", 4, "--no-progress", "--out", out, *extra]


def test_sigkill_then_resume_repeats_the_uninterrupted_losses(chr20, tmp_path):
    # the CLI's defaults: a per-base mlm (stem and decoder)
    train(mlm_config(chr20, tmp_path / "full", max_steps=8, ckpt_every=2, batch_size=2, stem=True, decoder=True))
    steps = ["--max-steps", 8, "--ckpt-every", 2, "--batch-size", 2]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))
    args = cli_args(chr20, tmp_path / "killed", *steps)
    proc = subprocess.Popen([sys.executable, "-m", "genoformer", *map(str, args)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = tmp_path / "killed" / "checkpoints" / "latest.json"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if latest.is_file() and json.loads(latest.read_text())["checkpoint"] >= "step-00000004":
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = run_cli("train", "--resume", tmp_path / "killed", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert train_losses(tmp_path / "killed") == train_losses(tmp_path / "full")
    with pytest.raises(CheckpointError):  # sanity: the comparison above read real runs
        resolve(tmp_path / "nowhere")


def test_recipe_file_with_flags_overriding_it(chr20, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("task: mlm\nmax-steps: 5\nwindow: 256\nseed: 3\n")
    proc = run_cli(*cli_args(chr20, tmp_path / "run", "--config", recipe, "--max-steps", 2))
    assert proc.returncode == 0, proc.stderr
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["max_steps"], saved["window"], saved["seed"]) == (2, 512, 3)  # flags win over the recipe
    assert json.loads(proc.stdout)["step"] == 2
    toml = tmp_path / "recipe.toml"
    toml.write_text('task = "mlm"\nlearning_rate = 0.1\n')
    assert_clean_failure(run_cli(*cli_args(chr20, tmp_path / "bad", "--config", toml)), 2, "learning_rate")


@pytest.fixture(scope="module")
def tiny_run(chr20, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny") / "run"
    train(mlm_config(chr20, out, max_steps=2))
    return out


@pytest.mark.parametrize("case", ["window_below_k", "empty_training_region", "val_overlaps_train",
                                  "bam_on_another_reference", "vcf_on_another_reference", "mlm_given_reads",
                                  "cuda_without_a_gpu",
                                  "existing_run_folder", "corrupt_checkpoint", "foreign_checkpoint"])
def test_bad_input_through_the_cli(chr20, shared_data, tiny_run, tmp_path, case):
    out = tmp_path / "run"
    if case == "window_below_k":
        proc = run_cli(*cli_args(chr20, out, "--window", 2, "--max-steps", 1))
        assert_clean_failure(proc, 2, "window 2 is smaller than k = 3")
    elif case == "empty_training_region":
        empty = tmp_path / "empty.bed"
        empty.write_text("# nothing here\n")
        proc = run_cli(*cli_args(chr20, out, "--max-steps", 1)[:4], empty, *cli_args(chr20, out)[5:])
        assert_clean_failure(proc, 2, "training regions are empty", "empty.bed")
    elif case == "val_overlaps_train":
        proc = run_cli(*cli_args(chr20, out, "--val-regions", "chr20:10,899,001-10,901,000", "--max-steps", 1))
        assert_clean_failure(proc, 2, "overlap", "chr20:10899001-10900000")
    elif case == "vcf_on_another_reference":
        vcf = shared_data / "sarscov2_mt192765" / "illumina" / "vcf" / "test.vcf.gz"
        proc = run_cli(*cli_args(chr20, out, "--task", "variant", "--bam", chr20["bam"], "--truth-vcf", vcf))
        assert_clean_failure(proc, 3, "test.vcf.gz", "another reference")
    elif case == "mlm_given_reads":
        proc = run_cli(*cli_args(chr20, out, "--bam", chr20["bam"]))
        assert_clean_failure(proc, 2, "task mlm does not use --bam")
    elif case == "cuda_without_a_gpu":
        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
        proc = run_cli(*cli_args(chr20, out, "--device", "cuda"))
        assert_clean_failure(proc, 2, "no CUDA GPU")
    elif case == "bam_on_another_reference":
        bam = shared_data / "sarscov2_mt192765" / "illumina" / "bam" / "test_paired_end.sorted.bam"
        proc = run_cli(*cli_args(chr20, out, "--task", "variant", "--bam", bam, "--truth-vcf", chr20["vcf"]))
        assert_clean_failure(proc, 3, "test_paired_end.sorted.bam")
    else:
        shutil.copytree(tiny_run, out)
        folder = resolve(out)
        if case == "existing_run_folder":
            proc = run_cli(*cli_args(chr20, out, "--max-steps", 2))
            assert_clean_failure(proc, 4, "already holds a training run")
        elif case == "corrupt_checkpoint":
            weights = folder / "model.safetensors"
            data = bytearray(weights.read_bytes())
            data[len(data) // 2] ^= 0xFF
            weights.write_bytes(bytes(data))
            proc = run_cli("train", "--resume", out)
            assert_clean_failure(proc, 3, "model.safetensors", "sha256")
        else:
            (folder / "checkpoint.json").write_text(json.dumps({"format": "something-else", "step": 2}))
            proc = run_cli("train", "--resume", out)
            assert_clean_failure(proc, 3, "checkpoint.json", "not a genoformer checkpoint")
