"""`genoformer calibrate`: fit the calibration of variant probabilities on held-out predictions
(genoformer.predict.calibration)."""
from __future__ import annotations

import json
from pathlib import Path

import click

from genoformer.coords import REGION

_file = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command()
@click.argument("predictions", type=_file, metavar="PREDS.h5")
@click.option("--truth-vcf", type=_file, required=True, metavar="VCF", help="Truth variants of the predicted sample.")
@click.option("--confident-bed", type=_file, metavar="BED", help="Score only calls inside these intervals (0-based).")
@click.option("--region", "regions", type=REGION, multiple=True,
              help="Call and score only this region (1-based); repeatable  [default: every covered base]")
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="1 - P(hom_ref) that calls a base: export's --threshold, the same calls.")
@click.option("--bam", type=click.Path(exists=True, dir_okay=False), metavar="BAM",
              help="Reads that pick each call's allele  [default: the BAM recorded in PREDS.h5]")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, metavar="JSON",
              help="Calibration file for `genoformer export --calibration`.")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
def calibrate(predictions: Path, truth_vcf: Path, confident_bed, regions, threshold: float, bam, out: Path,
              force: bool) -> None:
    """Fit QUAL and GQ to the calls of variant predictions over windows the model never trained on.

    \b
    The calls are export's; each score gets an isotonic map from its raw phred to the phred of the error
    rate the truth shows: false positives for QUAL, wrong genotypes for GQ. `export --calibration JSON`
    then writes calibrated QUAL and GQ. Prints the maps' sizes and the counts they were fitted on.
    """
    from genoformer.outputs import refuse_existing
    from genoformer.predict.calibrate import fit_calibration

    refuse_existing(out, force)
    calibration = fit_calibration(str(predictions), str(truth_vcf), confident_bed and str(confident_bed),
                                  list(regions), threshold, bam)
    calibration.save(out)
    counts = {k: calibration.fitted_on[k] for k in ("calls", "false_positives", "wrong_genotypes", "truth_alleles")}
    click.echo(json.dumps({"out": str(out), "qual_knots": len(calibration.qual), "gq_knots": len(calibration.gq),
                           **counts}))
