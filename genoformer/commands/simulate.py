"""`genoformer simulate`: write a small simulated example (genoformer.simulate.genome), or with
--long-range-distance the long-range example (genoformer.simulate.long_range)."""
from __future__ import annotations

from pathlib import Path

import click

from genoformer.simulate.genome import simulate as simulate_example
from genoformer.simulate.long_range import simulate_long_range


def _contig(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]):
    contigs = []
    for value in values:
        name, _, length = value.rpartition(":")
        if not name or not length.replace(",", "").isdigit():
            raise click.BadParameter(f"{value!r} is not NAME:LENGTH (e.g. chrA:60000)")
        contigs.append((name, int(length.replace(",", ""))))
    return tuple(contigs)


@click.command()
@click.option("--out", "out_dir", required=True, metavar="DIR",
              type=click.Path(file_okay=False, path_type=Path),
              help="Directory to write the example to (created; must be empty unless --force).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(min=0),
              help="Random seed: the same seed writes the same files.")
@click.option("--contig", "contigs", multiple=True, metavar="NAME:LENGTH", callback=_contig,
              help="A contig to simulate (repeatable; at least 10,000 bp).  "
                   "[default: chrA:60000 chrB:30000]")
@click.option("--coverage", default=30.0, show_default=True,
              type=click.FloatRange(min=0, min_open=True), help="Mean read depth.")
@click.option("--variant-rate", default=0.001, show_default=True, type=float, metavar="RATE",
              help="Truth variants per base, 0 to 1/15 (they stay at least 15 bases apart).")
@click.option("--long-range-distance", "distances", multiple=True, metavar="BASES", type=click.IntRange(min=50),
              help="Write the long-range example instead: per-base classes at sites set by a partner "
                   "motif this many bases away (repeatable: one contig per distance; e.g. 10000).")
@click.option("--long-range-pairs", default=64, show_default=True, type=click.IntRange(min=2),
              help="Long-range example: site-partner pairs per distance.")
@click.option("--force", is_flag=True,
              help="Replace DIR if it exists (only once the new example is complete).")
@click.pass_context
def simulate(ctx: click.Context, out_dir: Path, seed: int, contigs: tuple[tuple[str, int], ...], coverage: float,
             variant_rate: float, distances: tuple[int, ...], long_range_pairs: int, force: bool) -> None:
    """Write a simulated example: reference, aligned reads, truth VCF and BED tracks.

    The reference has CpG islands, planted motifs, soft-masked repeats and an N run; the
    sample SIM1 has phased het/hom SNVs and small indels; reads are Illumina-like pairs with
    quality-dependent errors, truly aligned.  See README.txt and manifest.json in DIR.

    With --long-range-distance: a reference whose sites are labelled A or B by a partner motif
    that distance away (long_range_A.bed, long_range_B.bed, pairs.tsv), no reads or variants.
    """
    if distances:
        given = [f"--{name.replace('_', '-')}" for name in ("contigs", "coverage", "variant_rate")
                 if ctx.get_parameter_source(name) == click.core.ParameterSource.COMMANDLINE]
        if given:
            raise click.UsageError(f"{given[0].replace('contigs', 'contig')} does not apply to the long-range "
                                   "example (--long-range-distance)")
        example = simulate_long_range(out_dir, seed, distances=distances, pairs=long_range_pairs, force=force)
        click.echo(f"long-range example (seed {seed}) written to {example.out_dir}")
        for label, path in (("reference", example.reference), *((f"class {k}", p) for k, p in
                                                                example.class_beds.items()),
                            ("pairs", example.pairs), ("manifest", example.manifest)):
            click.echo(f"  {label:<12} {path}")
        return
    kwargs = {"contigs": contigs} if contigs else {}
    example = simulate_example(out_dir, seed, coverage=coverage, variant_rate=variant_rate, force=force, **kwargs)
    click.echo(f"simulated example (seed {seed}) written to {example.out_dir}")
    for label, path in (("reference", example.reference), ("reads", example.reads),
                        ("truth VCF", example.truth_vcf), ("confident", example.confident_bed),
                        ("motifs", example.motifs_bed), ("CpG islands", example.cpg_islands_bed),
                        ("repeats", example.repeats_bed), ("manifest", example.manifest)):
        click.echo(f"  {label:<12} {path}")
