"""Calibrated QUAL and GQ: the scales and their file, fitted by predict.calibrate, applied by export.

A model trained with class weights, or briefly, is over- or under-confident: QUAL = phred(P(hom_ref))
and GQ = phred(1 - P(GT)) then do not say how often a call is wrong. predict.calibrate fits one
scale per score on calls in windows the model never trained on, a temperature on the phred scale
(log-odds calibration with no offset):

    P(wrong) = 10^(-scale x phred / 10)

maximising the Bernoulli likelihood of what happened: for QUAL, the allele is not in the truth (a
false positive); for GQ, its genotype is wrong (a false positive, or a true allele of the other
zygosity). A pseudo-call that was wrong at the largest phred keeps a perfect set finite.
`export --calibration FILE` multiplies QUAL and the (unrounded) GQ by the scales; which calls are
made does not change. Saved as JSON (`Calibration.save`); a file that is not one is InputError.
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
SCALE_RANGE = (0.05, 20.0)  # the scales searched
SCALE_TOLERANCE = 1e-4  # relative: the search stops when the bracket is this narrow


@dataclass
class Calibration:
    qual_scale: float = 1.0
    gq_scale: float = 1.0
    fitted_on: dict = field(default_factory=dict)  # what it was fitted on, and the calls' counts

    def save(self, path: str | os.PathLike) -> None:
        write_text(path, json.dumps({"format": FORMAT} | asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Calibration:
        data = read_json(path, "a calibration file")
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InputError(f"{path}: not a genoformer calibration file", hint="write one with genoformer calibrate")
        scales = [data.get("qual_scale"), data.get("gq_scale")]
        if not all(isinstance(s, (int, float)) and not isinstance(s, bool) and s > 0 for s in scales):
            raise InputError(f"{path}: qual_scale and gq_scale must be numbers > 0, got {scales}")
        return cls(float(scales[0]), float(scales[1]), data.get("fitted_on", {}))


def fit_scale(phred: np.ndarray, wrong: np.ndarray) -> float:
    """The scale s in SCALE_RANGE maximising the likelihood of `wrong` [n] under P(wrong) = 10^(-s x phred / 10).

    The log-likelihood is concave in s (a linear term per wrong call, log(1 - e^(-a s)) per right one), so a
    golden-section search finds its maximum with O(n) memory, whatever the number of calls."""
    phred = np.append(np.asarray(phred, dtype=np.float64), np.max(phred, initial=0.0))
    wrong = np.append(np.asarray(wrong, dtype=bool), True)  # the pseudo-call: wrong at the largest phred

    def loglik(log_scale: float) -> float:
        error = np.clip(10 ** (-np.exp(log_scale) * phred / 10), 1e-12, 1 - 1e-12)
        return float(np.where(wrong, np.log(error), np.log1p(-error)).sum())

    golden = (np.sqrt(5) - 1) / 2
    lo, hi = np.log(SCALE_RANGE[0]), np.log(SCALE_RANGE[1])
    a, b = hi - golden * (hi - lo), lo + golden * (hi - lo)
    fa, fb = loglik(a), loglik(b)
    while hi - lo > SCALE_TOLERANCE:
        if fa < fb:
            lo, a, fa = a, b, fb
            b = lo + golden * (hi - lo)
            fb = loglik(b)
        else:
            hi, b, fb = b, a, fa
            a = hi - golden * (hi - lo)
            fa = loglik(a)
    return float(np.exp((lo + hi) / 2))
