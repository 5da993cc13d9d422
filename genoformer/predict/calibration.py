"""Calibrated QUAL and GQ: fitted on calls in held-out (validation) windows, applied by export.

A model trained with class weights, or briefly, is over- or under-confident: QUAL = phred(P(hom_ref))
and GQ = phred(1 - P(GT)) then do not say how often a call is wrong. `fit_calibration` exports the
calls of predictions over windows the model never trained on (export's own path, so the same calls),
matches their alleles to the truth (evaluate.callsets: normalised, left-aligned) and fits one scale
per score, a temperature on the phred scale (log-odds calibration with no offset):

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
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from genoformer.errors import InputError, UsageError
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
        try:
            data = json.loads(Path(path).read_text())
        except OSError as e:
            raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
        except ValueError:
            raise InputError(f"{path}: not a calibration file (not JSON)") from None
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


def fit_calibration(predictions: str, truth_vcf: str, confident_bed: str | None = None,
                    regions: list[str] | None = None, threshold: float = 0.5, bam: str | None = None) -> Calibration:
    """Export the calls of `predictions` (inside `regions`), score them against the truth (inside
    `confident_bed`) and fit both scales (see the module docstring)."""
    from genoformer.coords import IntervalSet, read_bed
    from genoformer.evaluate.callsets import read_callset
    from genoformer.io.fasta import Reference
    from genoformer.io.predictions import open_predictions
    from genoformer.predict.export import ExportConfig, export

    with open_predictions(predictions) as preds:
        reference_path = preds.attrs.get("reference")
        covered = IntervalSet(preds.covered_blocks(regions or [], 1 << 20))  # the truth is scored here only
    with tempfile.TemporaryDirectory(prefix="genoformer-calibrate-") as tmp:
        calls = Path(tmp) / "calls.vcf"
        export(ExportConfig(predictions=predictions, vcf=str(calls), threshold=threshold, bam=bam,
                            regions=regions or [], progress=False), command="genoformer calibrate")
        reference = Reference(reference_path)  # export checked it against the predictions
        scored = [covered]
        if confident_bed:
            scored.append(IntervalSet(read_bed(confident_bed, reference.contigs)))
        found = read_callset(calls, reference=reference, regions=scored)
        truth = read_callset(truth_vcf, reference=reference, regions=scored)
    alleles = [a for a in found.alleles if None not in found.quality[a]]
    if not alleles:
        raise UsageError(f"{predictions}: no calls to calibrate on", hint="predict held-out windows with variants")
    qual, gq = (np.array([found.quality[a][i] for a in alleles], dtype=np.float64) for i in (0, 1))
    false = np.array([a not in truth.alleles for a in alleles])
    wrong_genotype = np.array([a not in truth.alleles or truth.alleles[a] != found.alleles[a] for a in alleles])
    return Calibration(fit_scale(qual, false), fit_scale(gq, wrong_genotype),
                       {"predictions": str(Path(predictions).resolve()), "truth_vcf": str(truth_vcf),
                        "confident_bed": confident_bed, "regions": regions or [], "threshold": threshold,
                        "calls": len(alleles), "false_positives": int(false.sum()),
                        "wrong_genotypes": int(wrong_genotype.sum()), "truth_alleles": len(truth.alleles)})
