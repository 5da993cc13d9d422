"""Calibrated QUAL and GQ: the maps and their file, fitted by predict.calibrate, applied by export.

A model trained with class weights, or briefly, is over- or under-confident: QUAL = phred(P(hom_ref))
and GQ = phred(1 - P(GT)) then do not say how often a call is wrong. predict.calibrate fits, per
score, an isotonic map from the raw phred to the phred of the observed error rate on calls in
windows the model never trained on: for QUAL, the allele is not in the truth (a false positive);
for GQ, its genotype is wrong (a false positive, or a true allele of the other zygosity).

The calls are sorted by raw phred and pooled into blocks whose error rates fall as the phred rises
(pool-adjacent-violators, pooling equal rates too, so ties and runs of right calls are one block);
each block's rate, (wrong + 0.5) / (calls + 1) so that a block without an error keeps a finite
phred, becomes a knot (mean raw phred, phred of the rate), the knots made non-decreasing; export interpolates between knots and holds the end values beyond them. A single
scale on the phred scale (the first calibration files, still read) missed by 8-17 points of error
rate where false calls at low scores meet true calls above them (simulated reads with paralog
artefacts, docs/benchmarks.md); the isotonic map follows both. `export --calibration FILE` maps QUAL
and the (unrounded) GQ through it; which calls are made does not change. Saved as JSON
(`Calibration.save`); a file that is not one is InputError.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

import numpy as np

from genoformer.errors import InputError
from genoformer.io.json_files import read_json
from genoformer.outputs import write_text

FORMAT = "genoformer-calibration"
MAX_PHRED = 100.0  # raw QUAL and GQ reach at most this (export_config.MIN_P)
Knots = list  # [[raw phred, calibrated phred], ...], raw increasing, calibrated non-decreasing


def identity() -> Knots:
    return [[0.0, 0.0], [MAX_PHRED, MAX_PHRED]]


@dataclass
class Calibration:
    qual: Knots = field(default_factory=identity)
    gq: Knots = field(default_factory=identity)
    fitted_on: dict = field(default_factory=dict)  # what it was fitted on, and the calls' counts

    def qual_of(self, phred: np.ndarray | float) -> np.ndarray:
        """Calibrated QUAL of a raw phred(P(hom_ref))."""
        return _apply(self.qual, phred)

    def gq_of(self, phred: np.ndarray | float) -> np.ndarray:
        """Calibrated (unrounded, uncapped) GQ of a raw phred(1 - P(GT))."""
        return _apply(self.gq, phred)

    def save(self, path: str | os.PathLike) -> None:
        write_text(path, json.dumps({"format": FORMAT} | asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Calibration:
        data = read_json(path, "a calibration file")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(f"{path}: not a genoformer calibration file", hint="write one with genoformer calibrate")
        if "qual" not in data and "gq" not in data:  # the first files: one scale per score
            scales = [data.get("qual_scale"), data.get("gq_scale")]
            if not all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in scales):
                raise InputError(f"{path}: qual_scale and gq_scale must be numbers > 0, got {scales}")
            data = data | {name: [[0.0, 0.0], [MAX_PHRED, MAX_PHRED * s]] for name, s in zip(("qual", "gq"), scales)}
        for name in ("qual", "gq"):
            if not _valid_knots(data.get(name)):
                raise InputError(f"{path}: {name} must be a list of [raw, calibrated] phred pairs, raw increasing and "
                                 f"calibrated non-decreasing, got {str(data.get(name))[:80]}")
        return cls(data["qual"], data["gq"], data.get("fitted_on", {}))


def _valid_knots(knots) -> bool:
    try:
        a = np.asarray(knots, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return a.ndim == 2 and a.shape[0] >= 1 and a.shape[1] == 2 and bool(np.isfinite(a).all()) and \
        bool((np.diff(a[:, 0]) > 0).all() and (np.diff(a[:, 1]) >= 0).all())


def _apply(knots: Knots, phred: np.ndarray | float) -> np.ndarray:
    a = np.asarray(knots, dtype=np.float64)
    return np.interp(np.asarray(phred, dtype=np.float64), a[:, 0], a[:, 1])


def fit(phred: np.ndarray, wrong: np.ndarray) -> Knots:
    """The isotonic map (see the module docstring) of calls with raw scores `phred` [n], `wrong` [n]."""
    x, w = np.asarray(phred, dtype=np.float64), np.asarray(wrong, dtype=np.float64)
    order = np.lexsort((w, x))  # by phred; right calls first among ties, so that PAV pools every tie
    x, w = x[order], w[order]
    blocks: list[list[float]] = []  # [sum of phred, wrong, calls], error rates falling along the list
    for xi, wi in zip(x.tolist(), w.tolist()):
        blocks.append([xi, wi, 1.0])
        while len(blocks) > 1 and blocks[-2][1] * blocks[-1][2] <= blocks[-1][1] * blocks[-2][2]:
            last = blocks.pop()  # a higher score wrong as often or more than the block before: pool them
            blocks[-1] = [a + b for a, b in zip(blocks[-1], last)]
    raw = [total / n for total, _, n in blocks]
    calibrated = np.maximum.accumulate([-10 * np.log10((k + 0.5) / (n + 1)) for _, k, n in blocks])
    return [[r, float(c)] for r, c in zip(raw, calibrated)]
