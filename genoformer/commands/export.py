"""`genoformer export`: a thin Click layer over genoformer.predict.export."""
from __future__ import annotations

import json
from pathlib import Path

import click

from genoformer.commands.paths import INPUT_FILE, INPUT_FILE_PATH
from genoformer.coords import REGION

_out = click.Path(dir_okay=False, path_type=Path)


@click.command()
@click.argument("predictions", type=INPUT_FILE_PATH, metavar="PREDS.h5")
@click.option("--vcf", type=_out, metavar="PATH",
              help="Variant calls: .vcf.gz (bgzipped, tabix-indexed) or .vcf. Variant predictions only.")
@click.option("--bed", type=_out, metavar="PATH",
              help="Runs of bases with class probability >= --threshold, per class (BED6; .gz: bgzip + tabix).")
@click.option("--bedgraph", type=_out, metavar="PATH",
              help="Probability per class as runs of equal rounded value; several classes: PATH.<class>.bedgraph.")
@click.option("--class", "classes", multiple=True, metavar="NAME",
              help="Class for --bed/--bedgraph; repeatable  [default: every class]")
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="VCF: P(het) + P(hom_alt) that calls a base; BED: class probability.")
@click.option("--min-gq", type=click.IntRange(0, 99), default=0, show_default=True,
              help="VCF records with a lower GQ get FILTER LowGQ.")
@click.option("--min-deletion-fraction", type=click.FloatRange(0, 1), default=0.25, show_default=True,
              help="Share of reads deleting a called base that makes it part of a deletion record.")
@click.option("--digits", type=click.IntRange(0, 4), default=2, show_default=True,
              help="bedGraph: decimals the probabilities are rounded to.")
@click.option("--sample", metavar="NAME", help="VCF sample name  [default: the BAM's SM, else SAMPLE]")
@click.option("--reference", type=INPUT_FILE, metavar="FA",
              help="Reference FASTA for VCF REF bases  [default: the one recorded in PREDS.h5]")
@click.option("--region", "regions", type=REGION, multiple=True,
              help="Export only this region (1-based, chr20:10,000,001-10,100,000); repeatable.")
@click.option("--force", is_flag=True, help="Replace existing outputs (only once the new ones are complete).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
def export(predictions: Path, vcf, bed, bedgraph, classes, threshold, min_gq, min_deletion_fraction, digits,
           sample, reference, regions, force, progress) -> None:
    """Write VCF calls (variant predictions) or BED / bedGraph tracks (any class) from PREDS.h5.

    \b
    VCF: a covered base is called when its most likely genotype is not hom_ref or
    P(non-ref) >= --threshold; ALT is the reads' most supported other base; a run of called
    bases deleted by >= --min-deletion-fraction of their reads is one deletion record.
    Insertions are not written (see docs/export_evaluate.md).
    GQ = phred(1 - P(GT)) capped at 99, QUAL = phred(P(hom_ref)), FORMAT/GP the probabilities.
    Prints a JSON summary (records written and calls skipped) on stdout.
    """
    from genoformer.predict.export import ExportConfig
    from genoformer.predict.export import export as run

    config = ExportConfig(predictions=str(predictions), vcf=vcf and str(vcf), bed=bed and str(bed),
                          bedgraph=bedgraph and str(bedgraph), classes=list(classes), threshold=threshold,
                          min_gq=min_gq, min_deletion_fraction=min_deletion_fraction, digits=digits,
                          sample=sample, reference=reference, regions=list(regions), force=force,
                          progress=progress)
    click.echo(json.dumps(run(config)))
