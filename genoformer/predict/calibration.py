"""Calibrated variant class probabilities: fitted on held-out (validation) windows, applied by export.

A model trained with class weights (or briefly) says P(variant) far from how often a base is one.
`fit_calibration` fits, on the covered bases of predictions over windows the model never trained
on and their truth classes (io.variant_classes, inside the confident BED), a temperature T and
one offset per class (vector scaling; the hom_ref offset is 0):

    calibrated = softmax(log(p) / T + offsets)

by minimising the mean negative log-likelihood of the truth classes (L-BFGS). The offsets undo the
class weights' prior shift; T sharpens or softens the rest. `export --calibration FILE` applies it
before anything is called, so the threshold, QUAL and GQ all read calibrated probabilities.
Saved as JSON (`Calibration.save`); a file that is not one is InputError (exit 3).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from genoformer.coords import IntervalSet, parse_region, read_bed
from genoformer.errors import InputError, UsageError
from genoformer.io.variant_classes import VARIANT_CLASSES, check_variant_classes, variant_class
from genoformer.outputs import write_text

MIN_P = 1e-7  # probabilities (float16 in the file) floored before the log
FORMAT = "genoformer-calibration"


@dataclass
class Calibration:
    temperature: float
    offsets: list[float]  # one per VARIANT_CLASSES class, hom_ref's 0
    classes: list[str] = field(default_factory=lambda: list(VARIANT_CLASSES))
    fitted_on: dict = field(default_factory=dict)  # what it was fitted on, and the NLL before and after

    def apply(self, probs: np.ndarray) -> np.ndarray:
        """Calibrated probabilities [n, C] of `probs` [n, C] (rows of zeros, uncovered bases, stay zero)."""
        logits = np.log(np.maximum(probs, MIN_P)) / self.temperature + np.asarray(self.offsets)
        logits -= logits.max(1, keepdims=True)
        out = np.exp(logits)
        out /= out.sum(1, keepdims=True)
        return np.where(probs.sum(1, keepdims=True) > 0, out, 0).astype(np.float32)

    def save(self, path: str | os.PathLike) -> None:
        write_text(path, json.dumps({"format": FORMAT} | asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Calibration:
        try:
            data = json.loads(Path(path).read_text())
        except OSError as e:
            raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
        except ValueError:
            raise InputError(f"{path}: not a calibration file (not JSON)") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(f"{path}: not a genoformer calibration file", hint="write one with genoformer calibrate")
        check_variant_classes(data.get("classes", []), str(path))
        t, offsets = data.get("temperature"), data.get("offsets")
        if not isinstance(t, (int, float)) or not t > 0 or not isinstance(offsets, list) or \
                len(offsets) != len(VARIANT_CLASSES) or not all(isinstance(o, (int, float)) for o in offsets):
            raise InputError(f"{path}: temperature must be > 0 and offsets {len(VARIANT_CLASSES)} numbers")
        return cls(float(t), [float(o) for o in offsets], list(data["classes"]), data.get("fitted_on", {}))


def fit(probs: np.ndarray, labels: np.ndarray) -> Calibration:
    """The temperature and offsets minimising the NLL of `labels` [n] under calibrated `probs` [n, C]."""
    import torch

    log_p = torch.from_numpy(np.log(np.maximum(probs, MIN_P)).astype(np.float64))
    target = torch.from_numpy(labels.astype(np.int64))
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    offsets = torch.zeros(probs.shape[1] - 1, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_t, offsets], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def nll():
        logits = log_p / log_t.exp() + torch.cat([offsets.new_zeros(1), offsets])
        return torch.nn.functional.cross_entropy(logits, target)

    def closure():
        optimiser.zero_grad()
        loss = nll()
        loss.backward()
        return loss

    before = float(torch.nn.functional.cross_entropy(log_p, target))
    optimiser.step(closure)
    with torch.no_grad():
        after = float(nll())
    return Calibration(float(log_t.detach().exp()), [0.0, *map(float, offsets.detach())],
                       fitted_on={"bases": int(len(labels)), "nll_before": before, "nll_after": after,
                                  "variant_bases": int((labels > 0).sum())})


def fit_from_predictions(predictions: str, truth_vcf: str, confident_bed: str | None = None,
                         regions: list[str] | None = None) -> Calibration:
    """Fit on the covered bases of `predictions` (inside `regions` and `confident_bed`) and their truth classes."""
    from genoformer.io.fasta import Reference
    from genoformer.io.predictions import open_predictions
    from genoformer.io.variants import TruthVariants

    with open_predictions(predictions) as preds:
        if preds.task != "variant":
            raise UsageError(f"{predictions}: calibration needs variant predictions (this file: task {preds.task})")
        check_variant_classes(preds.classes, str(predictions))
        reference_path = preds.attrs.get("reference")
        if not reference_path or not Path(reference_path).is_file():
            raise InputError(f"{predictions}: its reference {reference_path or '(none)'} is not there")
        reference = Reference(reference_path)
        truth = TruthVariants(truth_vcf, reference)
        confident = IntervalSet(read_bed(confident_bed, reference.contigs)) if confident_bed else None
        wanted = [parse_region(r, preds.contigs, source="--region") for r in regions or []]
        probs, labels = [], []
        for block in preds.covered_blocks(wanted, 1 << 20):
            p = preds.read(block)
            lab = truth.labels(block.contig, block.start, block.end, confident)
            keep = p.covered & lab.mask
            probs.append(p.probs[keep])
            labels.append(variant_class(lab.genotype[keep], lab.variant_type[keep]))
    if not probs or not sum(len(x) for x in labels):
        raise UsageError(f"{predictions}: no covered, scored bases to calibrate on",
                         hint="predict over held-out windows inside the confident BED first")
    labels_all = np.concatenate(labels)
    calibration = fit(np.concatenate(probs), labels_all)
    calibration.fitted_on |= {"predictions": str(Path(predictions).resolve()), "truth_vcf": str(truth_vcf),
                              "confident_bed": confident_bed, "regions": regions or []}
    return calibration
