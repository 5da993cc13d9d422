"""`genoformer simulate`: write a small simulated example (see genoformer.simulate.genome)."""
from __future__ import annotations

from pathlib import Path

import click

from genoformer.simulate.genome import simulate as simulate_example


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
@click.option("--force", is_flag=True,
              help="Replace DIR if it exists (only once the new example is complete).")
def simulate(out_dir: Path, seed: int, contigs: tuple[tuple[str, int], ...], coverage: float,
             force: bool) -> None:
    """Write a simulated example: reference, aligned reads, truth VCF and BED tracks.

    The reference has CpG islands, planted motifs, soft-masked repeats and an N run; the
    sample SIM1 has phased het/hom SNVs and small indels; reads are Illumina-like pairs with
    quality-dependent errors, truly aligned.  See README.txt and manifest.json in DIR.
    """
    kwargs = {"contigs": contigs} if contigs else {}
    example = simulate_example(out_dir, seed, coverage=coverage, force=force, **kwargs)
    click.echo(f"simulated example (seed {seed}) written to {example.out_dir}")
    for label, path in (("reference", example.reference), ("reads", example.reads),
                        ("truth VCF", example.truth_vcf), ("confident", example.confident_bed),
                        ("motifs", example.motifs_bed), ("CpG islands", example.cpg_islands_bed),
                        ("repeats", example.repeats_bed), ("manifest", example.manifest)):
        click.echo(f"  {label:<12} {path}")
