"""Protein secondary-structure quality: train on FLIP's secondary-structure train split, Q3 on CB513.

FLIP's zip (NetSurfP-2.0 data, ../shared/data/protein/flip_secondary_structure) is unpacked into a
temporary folder; a small per-residue `classify` model trains on SET=train minus VALIDATION=True
(those validate, once, after the last step) and skips SET=test. It is then scored on CB513
(CB513_HHblits.csv, dssp3 labels) by this script, not by the training code: the checkpoint is
loaded, every CB513 sequence is run whole (rotary positions need no window) and Q3 is the share of
scored residues whose argmax class equals the dssp3 letter. CB513 sequences identical to a FLIP
train sequence (2) are dropped first, and their ids printed.

Scored residues: `resolved` = the CSV's `disorder` column 1 (it equals FLIP's mask.fasta on the
shared chains: unresolved residues are not scored, as in training); `cb513_mask` = residues where
that column is 1 as well, a stricter subset. No published Q3 is printed: FLIP's README
(UPSTREAM_README.md) gives none for this split.

    python benchmarks/quality/protein_ss_quality.py [--budget 6m|400] [--json PATH]
"""
from __future__ import annotations

import argparse
import csv
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from quality_common import (
    DATA,
    add_common_args,
    add_model_args,
    check_data,
    machine,
    model_options,
    save_json,
    steps_for,
    table,
    work_dir,
)

from genoformer.model.checkpoint import load_checkpoint
from genoformer.model.heads import batch_inputs
from genoformer.train import TrainConfig, train

FLIP_ZIP = DATA / "protein" / "flip_secondary_structure" / "splits.zip"
CB513_CSV = DATA / "protein" / "cb513" / "CB513_HHblits.csv"
CB513_FASTA = DATA / "protein" / "cb513" / "CB513.fasta"  # ids (CB513|i) of the CSV's rows, in order


@dataclass
class CB513:
    ids: list[str]
    sequences: list[str]
    labels: list[str]  # dssp3, one letter per residue
    resolved: list[np.ndarray]  # bool per residue: the `disorder` column is 1
    cb513_mask: list[np.ndarray]  # bool per residue: the `cb513_mask` column is 1

    def drop(self, ids: set[str]) -> CB513:
        keep = [i for i, name in enumerate(self.ids) if name not in ids]
        return CB513(*([getattr(self, f)[i] for i in keep]
                       for f in ("ids", "sequences", "labels", "resolved", "cb513_mask")))


def fasta(path: Path | str) -> dict[str, tuple[str, str]]:
    """{id: (header, sequence)} of a plain FASTA file."""
    records, name = {}, None
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line.startswith(">"):
                name = line[1:].split()[0]
                records[name] = (line[1:], "")
            elif line:
                records[name] = (records[name][0], records[name][1] + line)
    return records


def read_cb513(csv_path: Path = CB513_CSV, fasta_path: Path = CB513_FASTA) -> CB513:
    """CB513's CSV rows (space-separated per residue), named by the FASTA's ids after checking both agree."""
    ids = list(fasta(fasta_path).items())
    with open(csv_path, newline="") as fh:
        rows = csv.reader(fh)
        header = [h.strip() for h in next(rows)]
        col = {name: header.index(name) for name in ("input", "dssp3", "disorder", "cb513_mask")}
        rows = [r for r in rows if r]
    if len(rows) != len(ids):
        raise SystemExit(f"{csv_path.name} has {len(rows)} rows, {fasta_path.name} {len(ids)} records")
    out = CB513([], [], [], [], [])
    for (name, (_, fasta_seq)), row in zip(ids, rows):
        seq = "".join(row[col["input"]].split())
        labels = "".join(row[col["dssp3"]].split())
        resolved = np.array([float(x) for x in row[col["disorder"]].split()]) == 1
        mask = np.array([float(x) for x in row[col["cb513_mask"]].split()]) == 1
        if seq != fasta_seq or not len(seq) == len(labels) == len(resolved) == len(mask):
            raise SystemExit(f"CB513 record {name}: the CSV row and the FASTA record disagree")
        for field, value in (("ids", name), ("sequences", seq), ("labels", labels), ("resolved", resolved),
                             ("cb513_mask", mask & resolved)):
            getattr(out, field).append(value)
    return out


def shared_with(cb: CB513, sequences: dict[str, tuple[str, str]], labels: dict[str, tuple[str, str]]) -> dict[str, list[str]]:
    """{CB513 id: [FLIP ids]} of CB513 sequences identical to a FLIP SET=train sequence (validation included)."""
    train = {}
    for name, (_, seq) in sequences.items():
        if "SET=train" in labels[name][0].split():
            train.setdefault(seq, []).append(name)
    return {cid: train[seq] for cid, seq in zip(cb.ids, cb.sequences) if seq in train}


def predict(run: Path, sequences: list[str], batch_size: int = 16) -> tuple[list[np.ndarray], list[str]]:
    """(predicted class index per residue of each whole sequence, class names) from the run's checkpoint."""
    model, meta, _ = load_checkpoint(run)
    model.eval()
    tok = model.tokenizer
    out: list[np.ndarray | None] = [None] * len(sequences)
    order = np.argsort([len(s) for s in sequences])  # similar lengths together: less padding
    with torch.no_grad():
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            codes = [tok.codes(sequences[i]) for i in idx]
            encoded = [tok.encode_codes(c) for c in codes]
            n = max(len(c) for c in codes)
            tokens = torch.full((len(idx), max(len(e) for e in encoded)), tok.pad_id, dtype=torch.int64)
            bases = torch.full((len(idx), n), tok.pad_code, dtype=torch.int64)
            valid = torch.zeros(len(idx), n, dtype=torch.bool)
            for b, (c, e) in enumerate(zip(codes, encoded)):
                tokens[b, :len(e)], bases[b, :len(c)] = torch.from_numpy(e), torch.from_numpy(c)
                valid[b, :len(c)] = True
            batch = {"tokens": tokens, "token_mask": tokens != tok.pad_id, "valid": valid, "bases": bases}
            logits = model(**batch_inputs(batch, "cpu"))  # [B, n, classes]
            for b, i in enumerate(idx):
                out[i] = logits[b, :len(sequences[i])].argmax(-1).numpy()
    return out, meta["head"]["class_names"]


def q3(cb: CB513, predicted: list[np.ndarray], classes: list[str], mask_field: str) -> tuple[float, str, float, int]:
    """(Q3, majority class, its Q3, residues scored) over the residues `mask_field` keeps."""
    letters = np.array(classes)
    truth = np.concatenate([np.array(list(s)) for s in cb.labels])
    guess = np.concatenate([letters[p] for p in predicted])
    scored = np.concatenate(getattr(cb, mask_field))
    truth, guess = truth[scored], guess[scored]
    names, counts = np.unique(truth, return_counts=True)
    return float((truth == guess).mean()), str(names[counts.argmax()]), float(counts.max() / counts.sum()), int(scored.sum())


def protein_config(args, flip: Path, out: Path) -> TrainConfig:
    return TrainConfig(task="classify", sequences=str(flip / "sequences.fasta"),
                       residue_labels=str(flip / "sampled.fasta"), residue_mask=str(flip / "mask.fasta"),
                       val_tag="VALIDATION=True", exclude_tag="SET=test", alphabet="protein", per_residue=True,
                       window=args.window, k=1, model=model_options(args), lr=args.lr, batch_size=args.batch_size, max_steps=1, ckpt_every=10 ** 9, val_every=10 ** 9,
                       seed=args.seed, device="cpu", out=str(out), progress=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(ap, "protein_ss_quality", "6m")
    ap.add_argument("--window", type=int, default=512, help="training crop in residues (CB513 is scored whole)")
    add_model_args(ap, d_model=96, batch_size=16)
    args = ap.parse_args()
    check_data(FLIP_ZIP, CB513_CSV, CB513_FASTA)
    torch.set_num_threads(args.threads)
    tmp = work_dir(args.keep)
    folder = Path(args.keep or tmp.name)
    try:
        with tempfile.TemporaryDirectory(prefix="flip-ss-") as unpacked:
            with zipfile.ZipFile(FLIP_ZIP) as zf:
                zf.extractall(unpacked)
            flip = Path(unpacked) / "splits"
            cb = read_cb513()
            shared = shared_with(cb, fasta(flip / "sequences.fasta"), fasta(flip / "sampled.fasta"))
            for cid, flip_ids in shared.items():
                print(f"dropped {cid}: identical to FLIP train {', '.join(flip_ids)}")
            cb = cb.drop(set(shared))
            config = protein_config(args, flip, folder / "run")
            config.max_steps, per_step = steps_for(args.budget, config, folder)
            summary = train(config)
        val = {r["metric"]: float(r["value"]) for r in csv.DictReader((folder / "run" / "metrics.csv").open())
               if r["split"] == "val"}
        predicted, classes = predict(folder / "run", cb.sequences)
    finally:
        if tmp is not None:
            tmp.cleanup()
    rows, scores = [], {}
    for field, what in (("resolved", "resolved residues"), ("cb513_mask", "cb513_mask residues")):
        q, commonest, majority, n = q3(cb, predicted, classes, field)
        scores[field] = {"q3": q, "majority_class": commonest, "majority_q3": majority, "residues": n}
        rows += [{"model": f"genoformer classify ({args.attention}, {summary['step']} steps)", "scored": what,
                  "residues": n, "q3": q},
                 {"model": f"majority class ({commonest})", "scored": what, "residues": n, "q3": majority}]
    print(f"CB513 minus {len(shared)} FLIP-train sequences: {len(cb.ids)} proteins; budget {args.budget}; "
          f"FLIP validation Q3 (training code) {val.get('q3', float('nan')):.3f}; no published Q3 in FLIP's README")
    print(table(rows, [("model", "model", ""), ("scored", "scored", ""), ("residues", "residues", ","),
                       ("q3", "Q3", ".3f")]))
    save_json(args.json, {"benchmark": "protein_ss_quality", "budget": str(args.budget), "machine": machine(),
                          "model": {k: getattr(args, k) for k in ("window", "d_model", "depth", "heads", "bucket_size",
                                                                  "n_hashes", "attention", "lr", "batch_size", "seed")},
                          "calibrated_s_per_step": per_step, "steps": summary["step"],
                          "train_seconds": summary["seconds"], "final_loss": summary["final_loss"],
                          "flip_validation": val, "dropped": shared, "cb513_proteins": len(cb.ids),
                          "cb513": scores, "published_q3": None, "command": " ".join(sys.argv), "rows": rows})


if __name__ == "__main__":
    main()
