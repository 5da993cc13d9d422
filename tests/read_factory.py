"""A hand-made sample: a reference, error-free reads from two haplotypes with planted variants, the truth VCF.

`write_sample(dst, seq, variants)` writes reference.fa, reads.bam and truth.vcf.gz for one contig;
`mirror_sample(seq, variants)` gives the same sample on the other strand, built base by base
(reverse-complemented sequence, each variant re-anchored on the reverse strand), and
`write_sample(..., reverse=True)` writes every read of the forward sample mirrored: reversed and
complemented sequence, reversed qualities and CIGAR, the strand flag flipped, the position moved
to the mirrored end. Reads are cut from the haplotypes every `step` bases and aligned by
construction (M where a base has a reference position, I where it has none, D across skipped
reference positions; an insertion at a read end becomes a soft clip).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pysam

import bam_factory as bf
from fasta_factory import write_fasta

_COMPLEMENT = str.maketrans("ACGTNacgtn", "TGCANtgcan")


def reverse_complement(s: str) -> str:
    return s.translate(_COMPLEMENT)[::-1]


@dataclass(frozen=True)
class Planted:
    """A variant at 0-based `pos`: snv (alt = one base), insertion after pos (alt = the inserted bases),
    or deletion of `length` bases after the anchor pos. `hom` False: het, on haplotype 1 only."""
    kind: str
    pos: int
    alt: str = ""
    length: int = 0
    hom: bool = False


def mirror_sample(seq: str, variants: list[Planted]) -> tuple[str, list[Planted]]:
    """The reference and variants of the other strand."""
    n = len(seq)
    out = []
    for v in variants:
        if v.kind == "snv":
            out.append(Planted("snv", n - 1 - v.pos, reverse_complement(v.alt), hom=v.hom))
        elif v.kind == "insertion":  # between pos and pos + 1 -> between n-2-pos and n-1-pos
            out.append(Planted("insertion", n - 2 - v.pos, reverse_complement(v.alt), hom=v.hom))
        else:  # deletes [pos + 1, pos + 1 + length) -> [n-1-pos-length, n-1-pos), anchored before
            out.append(Planted("deletion", n - 2 - v.pos - v.length, length=v.length, hom=v.hom))
    return reverse_complement(seq), sorted(out, key=lambda v: v.pos)


def haplotype(seq: str, variants: list[Planted], hap: int) -> tuple[str, list[int | None]]:
    """(sequence, reference position of each base or None for inserted bases) of haplotype 0 or 1."""
    bases, where = [], []
    events = {v.pos: v for v in variants if hap == 1 or v.hom}
    skip_to = -1
    for p, base in enumerate(seq):
        if p < skip_to:
            continue
        v = events.get(p)
        bases.append(v.alt if v is not None and v.kind == "snv" else base)
        where.append(p)
        if v is not None and v.kind == "insertion":
            bases.extend(v.alt)
            where.extend([None] * len(v.alt))
        elif v is not None and v.kind == "deletion":
            skip_to = p + 1 + v.length
    return "".join(bases), where


def _cigar(where: list[int | None]) -> tuple[int, str]:
    ops: list[list] = []
    prev = None
    for p in where:
        op = "I" if p is None else "M"
        if op == "M" and prev is not None and p > prev + 1:
            ops.append(["D", p - prev - 1])
        if ops and ops[-1][0] == op:
            ops[-1][1] += 1
        else:
            ops.append([op, 1])
        prev = p if p is not None else prev
    for end in (0, -1):
        if ops[end][0] == "I":
            ops[end][0] = "S"
    start = next(p for p in where if p is not None)
    return start, "".join(f"{n}{op}" for op, n in ops)


def reads(seq: str, variants: list[Planted], read_length: int = 40, step: int = 3) -> list[bf.Read]:
    """Error-free reads of both haplotypes, alternating strands, qualities varying along each read."""
    out = []
    for hap in (0, 1):
        hap_seq, where = haplotype(seq, variants, hap)
        for i, a in enumerate(range(-read_length + 5, len(hap_seq) - 5, step)):
            lo, hi = max(a, 0), min(a + read_length, len(hap_seq))
            if all(p is None for p in where[lo:hi]):
                continue
            start, cigar = _cigar(where[lo:hi])
            qual = [20 + (3 * j + 7 * i + 11 * hap) % 21 for j in range(hi - lo)]
            out.append(bf.Read(f"h{hap}r{i}", "c", start, cigar, hap_seq[lo:hi], qual=qual,
                               mapq=40 + (i % 3) * 10, flag=16 * (i % 2)))
    return out


def _mirror_read(r: bf.Read, n: int) -> bf.Read:
    ops = [(int(length), op) for length, op in re.findall(r"(\d+)([MIDNSHP=X])", r.cigar)]
    ref_len = sum(length for length, op in ops if op in "MDN=X")
    return bf.Read(r.name, r.contig, n - (r.start + ref_len), "".join(f"{length}{op}" for length, op in ops[::-1]),
                   reverse_complement(r.seq), qual=list(r.qual)[::-1], mapq=r.mapq, flag=r.flag ^ 16)


def _write_vcf(path: Path, seq: str, variants: list[Planted]) -> Path:
    header = pysam.VariantHeader()
    header.contigs.add("c", length=len(seq))
    header.add_meta("FORMAT", items=[("ID", "GT"), ("Number", 1), ("Type", "String"), ("Description", "Genotype")])
    header.add_sample("S")
    plain = path.with_suffix("")
    with pysam.VariantFile(str(plain), "w", header=header) as vcf:
        for v in variants:
            anchor = seq[v.pos].upper()
            if v.kind == "snv":
                alleles = (anchor, v.alt)
            elif v.kind == "insertion":
                alleles = (anchor, anchor + v.alt)
            else:
                alleles = (anchor + seq[v.pos + 1:v.pos + 1 + v.length].upper(), anchor)
            rec = vcf.new_record(contig="c", start=v.pos, alleles=alleles)
            rec.samples["S"]["GT"] = (1, 1) if v.hom else (0, 1)
            vcf.write(rec)
    return Path(pysam.tabix_index(str(plain), preset="vcf", force=True))


def write_sample(dst: Path, seq: str, variants: list[Planted], *, reverse: bool = False,
                 **read_args) -> dict[str, Path]:
    """reference.fa, reads.bam and truth.vcf.gz in `dst`; with `reverse`, the mirror of the forward sample."""
    dst.mkdir(parents=True, exist_ok=True)
    sample = reads(seq, variants, **read_args)
    if reverse:
        sample = [_mirror_read(r, len(seq)) for r in sample]
        seq, variants = mirror_sample(seq, variants)
    sample.sort(key=lambda r: r.start)
    return {"reference": write_fasta(dst / "reference.fa", {"c": seq}),
            "bam": bf.write_bam(dst / "reads.bam", {"c": len(seq)}, sample),
            "vcf": _write_vcf(dst / "truth.vcf.gz", seq, variants)}


def random_sequence(n: int, seed: int = 0, soft_masked: tuple[int, int] | None = None) -> str:
    rng = np.random.default_rng(seed)
    seq = "".join(rng.choice(list("ACGT"), n))
    if soft_masked:
        a, b = soft_masked
        seq = seq[:a] + seq[a:b].lower() + seq[b:]
    return seq
