"""Variants to score, read from a VCF/BCF (plain, bgzipped; no index needed) and checked against the reference.

Checked before any scoring, each failure an InputError naming the file and the record:
- the VCF's ##contig lengths against the reference (a VCF made on another build);
- every record's contig is a reference contig and its REF lies inside it;
- REF equals the reference bases (case aside) and is made of A, C, G, T, N.
Records come back sorted by the reference's contig order, then position (then input order), so
the output VCF can be tabix-indexed whatever the input order.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pysam

from genoformer.coords import check_interval
from genoformer.errors import InputError

_BASES = set("ACGTN")


@dataclass(frozen=True)
class Variant:
    """One VCF record: `pos` is the 0-based start of REF; `alts` as written (symbolic ones included)."""
    contig: str
    pos: int
    id: str
    ref: str  # upper case
    alts: tuple[str, ...]
    where: str  # "record 12 (chrA:1,234)" for messages

    @property
    def vcf_pos(self) -> int:
        return self.pos + 1


def scorable(alt: str) -> bool:
    """A sequence allele (not <DEL>, a breakend, '*' or '.')."""
    return bool(alt) and set(alt.upper()) <= _BASES


def _open(path: Path) -> pysam.VariantFile:
    if not path.is_file():
        raise InputError(f"{path}: no such VCF file")
    try:
        return pysam.VariantFile(str(path))
    except (ValueError, OSError) as e:
        raise InputError(f"{path}: not a VCF/BCF file ({e})") from None


def _check_contig_lengths(path: Path, vcf: pysam.VariantFile, contigs: Mapping[str, int], ref_name: str) -> None:
    differ = [f"{name} ({contigs[name]:,} bp in the reference, {c.length:,} in the VCF header)"
              for name, c in vcf.header.contigs.items() if name in contigs and c.length is not None
              and c.length != contigs[name]]
    if differ:
        raise InputError(f"{path}: VCF on another reference than {ref_name}: {'; '.join(differ[:3])}",
                         hint="use variants called on the same reference build (contig names and lengths)")


def read_variants(path: str | Path, reference) -> list[Variant]:
    """Every record of `path`, checked against `reference` (genoformer.io.fasta.Reference), sorted."""
    path = Path(path)
    contigs = reference.contigs
    order = {name: i for i, name in enumerate(contigs)}
    variants = []
    with _open(path) as vcf:
        _check_contig_lengths(path, vcf, contigs, str(reference.path))
        try:
            for n, rec in enumerate(vcf, 1):
                variants.append(_checked(path, n, rec, reference))
        except (ValueError, OSError) as e:  # htslib's parse errors
            raise InputError(f"{path}: cannot read record {len(variants) + 1} ({e})") from None
    if not variants:
        raise InputError(f"{path}: holds no variant records")
    return sorted(variants, key=lambda v: (order[v.contig], v.pos))  # stable: input order among equals


def _checked(path: Path, n: int, rec, reference) -> Variant:
    where = f"record {n} ({rec.chrom}:{rec.pos:,})"
    ref = (rec.ref or "").upper()
    if not ref or set(ref) - _BASES:
        raise InputError(f"{path}: {where}: REF {rec.ref!r} is not made of A, C, G, T, N")
    check_interval(rec.chrom, rec.start, rec.start + len(ref), reference.contigs, source=f"{path}: {where}")
    genome = reference.fetch(rec.chrom, rec.start, rec.start + len(ref)).tobytes().decode().upper()
    if genome != ref:
        raise InputError(f"{path}: {where}: REF {ref} but the reference has {genome} there",
                         hint="the VCF was made on another reference, or check it with "
                              "bcftools norm --check-ref e -f REFERENCE")
    return Variant(rec.chrom, rec.start, rec.id or ".", ref, tuple(rec.alts or ()), where)
