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
@click.option("--gvcf", type=_out, metavar="PATH",
              help="The calls plus reference-confidence blocks (<*>, INFO/END, GQ bands of 5), for "
                   "`bcftools merge --gvcf` and joint genotyping.")
@click.option("--bed", type=_out, metavar="PATH",
              help="Runs of bases with class probability >= --threshold, per class (BED6; .gz: bgzip + tabix).")
@click.option("--bedgraph", type=_out, metavar="PATH",
              help="Probability per class as runs of equal rounded value; several classes: PATH.<class>.bedgraph.")
@click.option("--class", "classes", multiple=True, metavar="NAME",
              help="Class for --bed/--bedgraph; repeatable  [default: every class]")
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="VCF: 1 - P(hom_ref) that calls a base; BED: class probability.")
@click.option("--min-gq", type=click.IntRange(0, 99), default=0, show_default=True,
              help="VCF records with a lower GQ get FILTER LowGQ.")
@click.option("--digits", type=click.IntRange(0, 4), default=2, show_default=True,
              help="bedGraph: decimals the probabilities are rounded to.")
@click.option("--sample", metavar="NAME", help="VCF sample name  [default: the BAM's SM, else SAMPLE]")
@click.option("--reference", type=INPUT_FILE, metavar="FA",
              help="Reference FASTA for VCF REF bases  [default: the one recorded in PREDS.h5]")
@click.option("--bam", type=click.Path(exists=True, dir_okay=False), metavar="BAM",
              help="VCF: reads that pick each call's allele  [default: the BAM recorded in PREDS.h5]")
@click.option("--calibration", type=click.Path(exists=True, dir_okay=False), metavar="JSON",
              help="VCF: map QUAL and GQ as `genoformer calibrate` fitted them on held-out calls.")
@click.option("--region", "regions", type=REGION, multiple=True,
              help="Export only this region (1-based, chr20:10,000,001-10,100,000); repeatable.")
@click.option("--force", is_flag=True, help="Replace existing outputs (only once the new ones are complete).")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Progress bar on stderr.")
def export(predictions: Path, vcf, gvcf, bed, bedgraph, classes, threshold, min_gq, digits,
           sample, reference, bam, calibration, regions, force, progress) -> None:
    """Write VCF calls (variant predictions) or BED / bedGraph tracks (any class) from PREDS.h5.

    \b
    VCF: a covered base is called when its most likely class is not hom_ref or
    1 - P(hom_ref) >= --threshold; the model calls SNVs, insertions after a base and deleted
    bases, and the reads pick each allele (a hom_alt call with two alleles of its type is one 1/2 record).
    Records are left-aligned and trimmed as `bcftools norm -f REF` leaves them.
    GQ = phred(1 - P(GT)) capped at 99, QUAL = phred(P(hom_ref)), FORMAT/CP the class probabilities;
    --calibration maps QUAL and GQ (genoformer calibrate: isotonic, fitted on held-out calls).
    Prints a JSON summary (records written and calls skipped) on stdout.
    """
    from genoformer.predict.export import ExportConfig
    from genoformer.predict.export import export as run

    config = ExportConfig(predictions=str(predictions), vcf=vcf and str(vcf), gvcf=gvcf and str(gvcf),
                          bed=bed and str(bed),
                          bedgraph=bedgraph and str(bedgraph), classes=list(classes), threshold=threshold,
                          min_gq=min_gq, digits=digits,
                          sample=sample, reference=reference, bam=bam, calibration=calibration,
                          regions=list(regions), force=force,
                          progress=progress)
    click.echo(json.dumps(run(config)))
