"""`genoformer evaluate`: variant calls against a truth VCF, or pattern predictions against tracks."""
from __future__ import annotations

from pathlib import Path

import click

from genoformer.commands.paths import INPUT_FILE_PATH
from genoformer.coords import REGION
from genoformer.errors import UsageError

_file = INPUT_FILE_PATH


@click.command()
@click.option("--calls", type=_file, metavar="VCF", help="Variant calls (VCF/BCF, plain or bgzip) to score.")
@click.option("--truth-vcf", type=_file, metavar="VCF", help="Truth variants (e.g. GIAB) for --calls.")
@click.option("--confident-bed", type=_file, metavar="BED",
              help="Score only inside these intervals (0-based), e.g. the GIAB high-confidence BED.")
@click.option("--calls-sample", metavar="NAME", help="Sample column of --calls  [default: its only sample]")
@click.option("--truth-sample", metavar="NAME", help="Sample column of --truth-vcf  [default: its only sample]")
@click.option("--predictions", type=_file, metavar="H5", help="Pattern predictions (genoformer predict) to score.")
@click.option("--truth-bed", "truth_beds", type=_file, multiple=True, metavar="BED",
              help="Truth track for --predictions, one class per file named after it; repeatable.")
@click.option("--truth-gff", "truth_gffs", type=_file, multiple=True, metavar="GFF",
              help="GFF3/GTF truth for --predictions, one class per feature type; repeatable.")
@click.option("--feature-type", "feature_types", multiple=True, metavar="TYPE",
              help="Keep only this GFF/GTF feature type (gene, CDS, ...); repeatable.")
@click.option("--truth-soft-mask", is_flag=True,
              help="Truth class soft_masked: the reference's lower-case bases (repeats).")
@click.option("--reference", type=_file, metavar="FA",
              help="Reference FASTA: checks the VCFs' contigs and REF bases; for --truth-soft-mask "
                   "[default there: the one recorded in the predictions].")
@click.option("--region", "regions", type=REGION, multiple=True,
              help="Score only inside this region (1-based, chr20:10,000,001-10,100,000); repeatable.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), metavar="PATH",
              help="Also write the scores as JSON (atomically).")
@click.option("--force", is_flag=True, help="Replace an existing --json file.")
def evaluate(calls, truth_vcf, confident_bed, calls_sample, truth_sample, predictions, truth_beds, truth_gffs,
             feature_types, truth_soft_mask, reference, regions, json_path, force) -> None:
    """Score variant calls (--calls with --truth-vcf) or pattern predictions (--predictions with truth tracks).

    \b
    Variants: TP/FP/FN, precision, recall and F1 for SNVs and indels, matched by position and
    alleles after trimming shared bases (no left-alignment), and genotype concordance.
    Pattern: AUROC and AUPRC per class over the covered bases.
    Prints a table on stdout; --json PATH writes the same scores with the settings used.
    """
    from genoformer.outputs import refuse_existing, write_text

    variant_mode = calls is not None or truth_vcf is not None
    pattern_mode = predictions is not None or truth_beds or truth_gffs or truth_soft_mask
    if variant_mode == bool(pattern_mode):
        raise UsageError("give either --calls with --truth-vcf (variants) or --predictions with truth tracks (pattern)")
    if json_path is not None:
        refuse_existing(json_path, force)
    if variant_mode:
        if calls is None or truth_vcf is None:
            raise UsageError("variant evaluation needs both --calls and --truth-vcf")
        from genoformer.evaluate.variants import EvaluateConfig
        from genoformer.evaluate.variants import evaluate as run

        result = run(EvaluateConfig(
            calls=str(calls), truth_vcf=str(truth_vcf), confident_bed=confident_bed and str(confident_bed),
            regions=list(regions), reference=reference and str(reference), calls_sample=calls_sample,
            truth_sample=truth_sample))
    else:
        if predictions is None:
            raise UsageError("pattern evaluation needs --predictions")
        if confident_bed is not None:
            raise UsageError("--confident-bed is for variant evaluation; use --region to restrict pattern scoring")
        from genoformer.evaluate.patterns import PatternEvaluateConfig, evaluate_pattern

        result = evaluate_pattern(PatternEvaluateConfig(
            predictions=str(predictions), tracks=[str(p) for p in truth_beds + truth_gffs],
            feature_types=list(feature_types) or None, soft_mask=truth_soft_mask,
            reference=reference and str(reference), regions=list(regions)))
    click.echo(result.table())
    if json_path is not None:
        write_text(json_path, result.to_json())
