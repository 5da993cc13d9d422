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
@click.option("--confident-bed", type=_file, metavar="BED", help="Fit only on bases inside these intervals (0-based).")
@click.option("--region", "regions", type=REGION, multiple=True,
              help="Fit only on this region (1-based); repeatable  [default: every covered base]")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, metavar="JSON",
              help="Calibration file for `genoformer export --calibration`.")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
def calibrate(predictions: Path, truth_vcf: Path, confident_bed, regions, out: Path, force: bool) -> None:
    """Fit a temperature and per-class offsets to variant predictions of windows the model never trained on.

    \b
    The fit minimises the negative log-likelihood of the truth classes on the covered bases;
    `export --calibration JSON` then calls, and computes QUAL and GQ, from calibrated
    probabilities. Prints the fit (temperature, offsets, NLL before and after) on stdout.
    """
    from genoformer.outputs import refuse_existing
    from genoformer.predict.calibration import fit_from_predictions

    refuse_existing(out, force)
    calibration = fit_from_predictions(str(predictions), str(truth_vcf), confident_bed and str(confident_bed),
                                       list(regions))
    calibration.save(out)
    click.echo(json.dumps({"out": str(out), "temperature": calibration.temperature, "offsets": calibration.offsets,
                           **{k: v for k, v in calibration.fitted_on.items() if k.startswith(("nll", "bases"))}}))
