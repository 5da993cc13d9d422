"""Fit a Calibration (predict.calibration) on calls in held-out (validation) windows.

The calls are export's own (the same path, so the same calls) from predictions over windows the model
never trained on; their alleles are matched to the truth by evaluate.callsets (normalised,
left-aligned), and each score's isotonic map is fitted by calibration.fit.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from genoformer.coords import IntervalSet, read_bed
from genoformer.errors import UsageError
from genoformer.evaluate.callsets import read_callset
from genoformer.io.fasta import Reference
from genoformer.io.predictions import open_predictions
from genoformer.predict.calibration import Calibration, fit
from genoformer.predict.export import ExportConfig, export


def fit_calibration(predictions: str, truth_vcf: str, confident_bed: str | None = None,
                    regions: list[str] | None = None, threshold: float = 0.5, bam: str | None = None) -> Calibration:
    """Export the calls of `predictions` (inside `regions`), score them against the truth (inside
    `confident_bed`) and fit both scores' maps (see predict.calibration)."""
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
    return Calibration(fit(qual, false), fit(gq, wrong_genotype),
                       {"predictions": str(Path(predictions).resolve()), "truth_vcf": str(truth_vcf),
                        "confident_bed": confident_bed, "regions": regions or [], "threshold": threshold,
                        "calls": len(alleles), "false_positives": int(false.sum()),
                        "wrong_genotypes": int(wrong_genotype.sum()), "truth_alleles": len(truth.alleles)})
