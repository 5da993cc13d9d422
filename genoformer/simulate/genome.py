"""Simulate a small, realistic example: a reference, paired reads, truth variants and tracks.

`simulate(out_dir, seed)` writes, in a few seconds on one CPU core:

- reference.fa (+ .fai), 60 bases a line. Random sequence whose GC content varies by region
  (2-8 kb blocks, GC 0.35-0.55), with 3/4 of CpGs turned into TpG/CpA outside islands, as
  methylated CpGs deaminate in real genomes. Planted on it: CpG islands (500-1500 bp, GC >= 0.6,
  CpG obs/exp >= 0.6); motifs on either strand (a TATA box TATAAAAG and a CTCF-like core
  CCGCGNGGNGGCAG, N drawn per copy); one ~300 bp repeat family copied with ~2% divergence
  and one exact tandem repeat per contig, both soft-masked (lowercase); 1 kb of N on the
  first contig.
- truth.vcf.gz (+ .tbi), sample SIM1: SNVs (transitions:transversions 2:1) and 1-10 bp
  insertions and deletions, het (0|1 or 1|0) or hom-alt (1|1), >= 15 bp apart, only inside
  confident regions. Half the indels add or remove one or two copies of the unit of a tandem
  repeat written there (8-24 bp homopolymers and 2-4 bp units, as most short indels in real
  genomes do); the others are random sequence. Indels carry the preceding base and are
  left-aligned.
- reads.bam (+ .bai): read pairs drawn uniformly from the two haplotypes, fragment length
  ~ Normal(insert_mean, insert_sd), read 1 on the forward strand for half the fragments (an FR
  library). Phred qualities start high and decay along the read, with noise and occasional
  low-quality bases; each base is substituted with probability 10^(-Q/10). Alignments are the
  TRUE ones, taken from the haplotype -> reference coordinate map (M, I, D; soft clip where a
  read starts or ends inside an insertion), MAPQ 60, except that a read ending close to an indel
  is aligned as a local aligner would (without the indel, soft-clipped, where that scores
  higher: simulate/reads.py). Two artefacts of real reads are planted, as a caller must learn to
  ignore them: 2 % of each contig lies in 1-3 kb stretches onto which a 1 %-diverged paralog's reads
  map at MAPQ 0-30 (at 0.3x the depth), and at one position in 10,000 a fifth to a half of one
  strand's reads read a wrong base. Fragments touching N are skipped.
- confident.bed (each contig minus its N runs and 200 bp at each end), motifs.bed,
  cpg_islands.bed, repeats.bed (0-based half-open), manifest.json and README.txt.

The same seed gives byte-identical FASTA, VCF and BED files and identical BAM records under a
given numpy version (numpy may change Generator streams between releases). The example is
built in a hidden directory beside out_dir and renamed into place, so a killed run never
leaves a half-made example.
"""
from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pysam

from genoformer import __version__
from genoformer.coords import runs
from genoformer.errors import UsageError
from genoformer.simulate.files import publish, write_bed, write_fasta
from genoformer.simulate.reads import ACGT, INDEX, UPPER, substitute, write_bam

SAMPLE = "SIM1"
MOTIFS = {"TATA_box": "TATAAAAG", "CTCF_core": "CCGCGNGGNGGCAG"}
REPEAT_FAMILY = "SIMREP1"
EDGE = 200          # bp at contig ends left out of confident regions: coverage ramps up there
N_RUN = 1000
MIN_SPACING = 15    # between variants, and between a variant and N
MAX_INDEL = 10
# the share of indels that add or remove copies of a tandem repeat's unit, as most short indels in real genomes do
# (a het one there shows in the reads that span the repeat, not in half of all reads); the repeat is written
# into the reference: its unit of 1-4 bases (with these probabilities), REPEAT_LENGTH bases long
REPEAT_SHARE = 0.5
REPEAT_UNITS = (0.4, 0.3, 0.15, 0.15)
REPEAT_LENGTH = (8, 25)
MIN_CONTIG = 10_000  # room for every planted feature with space between them

_COMPLEMENT = np.arange(256, dtype=np.uint8)
_COMPLEMENT[np.frombuffer(b"ACGTNacgtn", np.uint8)] = np.frombuffer(b"TGCANtgcan", np.uint8)
_TRANSITION = {"A": "G", "G": "A", "C": "T", "T": "C"}


@dataclass(frozen=True)
class SimulatedExample:
    """Paths of one simulated example (all inside `out_dir`)."""
    out_dir: Path
    reference: Path
    reads: Path
    truth_vcf: Path
    confident_bed: Path
    motifs_bed: Path
    cpg_islands_bed: Path
    repeats_bed: Path
    manifest: Path
    readme: Path

    @classmethod
    def in_dir(cls, out_dir: str | os.PathLike) -> SimulatedExample:
        d = Path(out_dir)
        return cls(d, d / "reference.fa", d / "reads.bam", d / "truth.vcf.gz", d / "confident.bed",
                   d / "motifs.bed", d / "cpg_islands.bed", d / "repeats.bed",
                   d / "manifest.json", d / "README.txt")


def simulate(out_dir: str | os.PathLike, seed: int = 0, *,
             contigs: Sequence[tuple[str, int]] = (("chrA", 60_000), ("chrB", 30_000)),
             coverage: float = 30.0, read_length: int = 101, insert_mean: float = 300,
             insert_sd: float = 30, variant_rate: float = 1 / 1000, indel_fraction: float = 0.2,
             het_fraction: float = 0.6, force: bool = False) -> SimulatedExample:
    """Write a simulated example to `out_dir` and return its paths.

    Raises UsageError for bad parameters and OutputError when `out_dir` exists and is not
    empty (unless `force`, which replaces it only once the new example is complete) or
    cannot be written.
    """
    params = dict(seed=seed, contigs=[[str(n), int(length)] for n, length in contigs],
                  coverage=coverage, read_length=read_length, insert_mean=insert_mean,
                  insert_sd=insert_sd, variant_rate=variant_rate,
                  indel_fraction=indel_fraction, het_fraction=het_fraction)
    _check(params)
    publish(Path(out_dir), force, lambda tmp: _build(SimulatedExample.in_dir(tmp), params))
    return SimulatedExample.in_dir(out_dir)


def _check(p: dict) -> None:
    names, lengths = [n for n, _ in p["contigs"]], [n for _, n in p["contigs"]]
    rules = [
        ("seed", isinstance(p["seed"], (int, np.integer)) and p["seed"] >= 0, "an integer >= 0"),
        ("contigs", len(set(names)) == len(names) > 0 and all(
            n.isprintable() and n and not set(n) & set(" \t:,") for n in names),
         "at least one, unique names without spaces, ':' or ','"),
        ("contigs", min(lengths, default=0) >= MIN_CONTIG, f"each at least {MIN_CONTIG} bp"),
        ("coverage", p["coverage"] > 0, "> 0"),
        ("read_length", isinstance(p["read_length"], (int, np.integer))
         and 20 <= p["read_length"] <= 1000, "an integer 20-1000"),
        ("insert_mean", p["read_length"] <= p["insert_mean"] <= MIN_CONTIG / 2,
         f"between read_length and {MIN_CONTIG // 2}"),
        ("insert_sd", p["insert_sd"] >= 0, ">= 0"),
        ("variant_rate", 0 <= p["variant_rate"] <= 1 / MIN_SPACING, f"0-1/{MIN_SPACING}"),
        ("indel_fraction", 0 <= p["indel_fraction"] <= 1, "0-1"),
        ("het_fraction", 0 <= p["het_fraction"] <= 1, "0-1")]
    for key, ok, rule in rules:
        if not ok:
            raise UsageError(f"simulate: {key} must be {rule} (got {p[key]!r})")
    p["seed"] = int(p["seed"])


def _build(ex: SimulatedExample, p: dict) -> None:
    rng = np.random.default_rng(p["seed"])
    family = _bases(rng, 0.45, int(rng.integers(280, 321)))  # the repeat family consensus
    seqs, tracks, variants, confident = {}, [], [], []
    for i, (name, length) in enumerate(p["contigs"]):
        seq, rows = _make_contig(rng, length, family, with_n=i == 0)
        seqs[name] = seq
        tracks += [(name, *row) for row in rows]
        variants += [(name, *v) for v in _variants(rng, seq, p, rows)]
        confident += [(name, s, e) for s, e in _confident(seq)]
    write_fasta(ex.reference, seqs)
    _write_vcf(ex.truth_vcf, seqs, variants)
    order = {name: i for i, name in enumerate(seqs)}
    for path, track in ((ex.motifs_bed, "motif"), (ex.cpg_islands_bed, "cpg_island"),
                        (ex.repeats_bed, "repeat")):
        rows = sorted((r for r in tracks if r[3] == track), key=lambda r: (order[r[0]], r[1]))
        write_bed(path, [(c, s, e, n, 0, strand) if track != "cpg_island" else (c, s, e, n)
                         for c, s, e, _, n, strand in rows])
    write_bed(ex.confident_bed, confident)
    n_pairs = write_bam(ex.reads, rng, seqs, variants, p, sample=SAMPLE, command_line=_command_line(p))
    _write_manifest(ex, p, seqs, tracks, variants, n_pairs)


# reference ----------------------------------------------------------------------------------

def _bases(rng: np.random.Generator, gc, n: int) -> np.ndarray:
    """n random uppercase bases, each G or C with probability `gc` (scalar or per base)."""
    u, gc = rng.random(n), np.broadcast_to(gc, (n,))
    return ACGT[(u >= (1 - gc) / 2).astype(np.uint8) + (u >= 0.5) + (u >= (1 + gc) / 2)]


def _gc_cpg(seq: np.ndarray) -> tuple[float, float]:
    """GC fraction and CpG observed/expected (Gardiner-Garden & Frommer 1987)."""
    s = UPPER[seq]
    c, g = np.sum(s == ord("C")), np.sum(s == ord("G"))
    cg = np.sum((s[:-1] == ord("C")) & (s[1:] == ord("G")))
    return (c + g) / s.size, cg * s.size / max(c * g, 1)


def _background(rng: np.random.Generator, length: int) -> np.ndarray:
    blocks = rng.integers(2000, 8001, size=length // 2000 + 1)
    seq = _bases(rng, np.repeat(rng.uniform(0.35, 0.55, blocks.size), blocks)[:length], length)
    cg = np.flatnonzero((seq[:-1] == ord("C")) & (seq[1:] == ord("G")))
    cg = cg[rng.random(cg.size) < 0.75]
    on_g = rng.random(cg.size) < 0.5
    seq[cg[~on_g]] = ord("T")
    seq[cg[on_g] + 1] = ord("A")
    return seq


def _place(rng: np.random.Generator, taken: np.ndarray, size: int, gap: int = 50) -> int:
    """A random start where `size` bases (plus `gap` around) are free; marks them taken."""
    for _ in range(1000):
        start = int(rng.integers(EDGE + gap, taken.size - EDGE - gap - size))
        if not taken[start - gap:start + size + gap].any():
            taken[start:start + size] = True
            return start
    raise UsageError(f"simulate: no room left for planted features on a {taken.size} bp contig",
                     hint="use longer contigs")


def _make_contig(rng, length: int, family: np.ndarray, with_n: bool):
    """Sequence (ASCII uint8) and its features as (start, end, track, name, strand)."""
    seq, taken, rows = _background(rng, length), np.zeros(length, bool), []

    def plant(piece: np.ndarray, track: str, name: str, strand: str = ".", gap: int = 50) -> None:
        start = _place(rng, taken, piece.size, gap)
        seq[start:start + piece.size] = piece
        rows.append((start, start + piece.size, track, name, strand))

    if with_n:
        plant(np.full(N_RUN, ord("N"), np.uint8), "n_run", "N", gap=MIN_SPACING + MAX_INDEL)
    for _ in range(max(1, length // 20_000)):
        while True:
            island = _bases(rng, 0.68, int(rng.integers(500, 1501)))
            gc, obs_exp = _gc_cpg(island)
            if gc >= 0.6 and obs_exp >= 0.6:
                break
        plant(island, "cpg_island", "CpG_island")
    for _ in range(max(2, length // 12_000)):
        copy, strand = substitute(rng, family, 0.02), "+-"[int(rng.integers(2))]
        copy = copy if strand == "+" else _COMPLEMENT[copy[::-1]]
        plant(copy | 0x20, "repeat", REPEAT_FAMILY, strand)
    while True:
        unit = ACGT[rng.integers(0, 4, int(rng.integers(2, 7)))]
        if np.unique(unit).size > 1:
            break
    tandem = np.tile(unit, int(rng.integers(40, 81)) // unit.size) | 0x20
    plant(tandem, "repeat", f"({unit.tobytes().decode()})n", "+")
    for name, pattern in MOTIFS.items():
        for _ in range(max(2, length // 10_000)):
            motif = np.frombuffer(pattern.encode(), np.uint8).copy()
            n = motif == ord("N")
            motif[n] = ACGT[rng.integers(0, 4, n.sum())]
            strand = "+-"[int(rng.integers(2))]
            plant(motif if strand == "+" else _COMPLEMENT[motif[::-1]], "motif", name, strand)
    return seq, [r for r in rows if r[2] != "n_run"]


def _confident(seq: np.ndarray) -> list[tuple[int, int]]:
    inner = UPPER[seq[EDGE:seq.size - EDGE]] != ord("N")
    starts, ends = runs(inner)
    return list(zip((starts + EDGE).tolist(), (ends + EDGE).tolist()))


# variants ------------------------------------------------------------------------------------

def _variants(rng: np.random.Generator, seq: np.ndarray, p: dict, features: list[tuple]):
    """Truth variants as (pos, ref, alt, (allele hap 1, allele hap 2)), sorted, 0-based pos. Indels in a
    repeat write the repeat into `seq` first (away from the planted `features`)."""
    upper = UPPER[seq]
    is_n = np.concatenate([[0], np.cumsum(upper == ord("N"))])
    idx = np.arange(EDGE, seq.size - EDGE)
    near_n = is_n[idx + MIN_SPACING + 1] > is_n[idx - MIN_SPACING]
    candidates = idx[~near_n]
    n = rng.binomial(candidates.size, p["variant_rate"])
    picked = np.sort(rng.choice(candidates, n, replace=False))
    out, last = [], -MIN_SPACING
    for pos in picked.tolist():
        if pos - last < MIN_SPACING:
            continue
        last, r = pos, chr(upper[pos])
        ref, alt = r, None
        if rng.random() < p["indel_fraction"]:
            size = min(int(rng.geometric(0.4)), MAX_INDEL)
            insertion = rng.random() < 0.5
            in_repeat = _plant_repeat(rng, seq, pos, features) if rng.random() < REPEAT_SHARE else None
            if in_repeat is not None:  # one or two copies more or fewer of the repeat's unit
                start, unit, copies = in_repeat
                upper[start:start + len(unit) * copies] = UPPER[seq[start:start + len(unit) * copies]]
                k = int(rng.integers(1, 3))
                ref, alt = (r, r + unit * k) if insertion else (r + unit * k, r)
                last = start + len(unit) * copies
            elif insertion:  # random sequence, left-aligned: its last base is not the anchor
                ins = ACGT[rng.integers(0, 4, size)]
                if ins[-1] == upper[pos]:
                    ins[-1] = ACGT[(INDEX[upper[pos]] + rng.integers(1, 4)) % 4]
                alt = r + ins.tobytes().decode()
            else:  # deletion; left-aligned iff the anchor differs from the last deleted base
                for n in [size, *rng.permutation(np.arange(1, MAX_INDEL + 1)).tolist()]:
                    if upper[pos + n] != upper[pos]:
                        ref, alt = upper[pos:pos + n + 1].tobytes().decode(), r
                        break
        if alt is None:
            alt = _TRANSITION[r] if rng.random() < 2 / 3 else \
                "ACGT".replace(r, "").replace(_TRANSITION[r], "")[int(rng.integers(2))]
        if rng.random() < p["het_fraction"]:
            gt = (0, 1) if rng.random() < 0.5 else (1, 0)
        else:
            gt = (1, 1)
        out.append((pos, ref, alt, gt))
    return out


def _plant_repeat(rng: np.random.Generator, seq: np.ndarray, pos: int, features: list[tuple]
                  ) -> tuple[int, str, int] | None:
    """Write a tandem repeat into `seq` right after `pos`, where an indel will change its copies:
    (start, unit, copies); None where it would touch a planted feature, N or a contig's edge. The unit's
    last base differs from the base at `pos`, so an indel anchored there is left-aligned."""
    u = int(rng.choice(4, p=REPEAT_UNITS)) + 1
    copies = max(3, int(rng.integers(*REPEAT_LENGTH)) // u)
    unit = ACGT[rng.integers(0, 4, u)]
    while unit[-1] == UPPER[seq[pos]] or (u > 1 and np.unique(unit).size == 1):
        unit = ACGT[rng.integers(0, 4, u)]
    start, end = pos + 1, pos + 1 + u * copies
    if end + MIN_SPACING > seq.size - EDGE or (UPPER[seq[pos:end + MIN_SPACING]] == ord("N")).any() or \
            any(s < end and pos < e for s, e, *_ in features):
        return None
    seq[start:end] = np.tile(unit, copies)
    return start, unit.tobytes().decode(), copies


# writers -------------------------------------------------------------------------------------

def _write_vcf(path: Path, seqs: dict[str, np.ndarray], variants) -> None:
    header = pysam.VariantHeader()
    header.add_line(f"##source=genoformer simulate {__version__}")
    header.add_line("##reference=reference.fa")
    for name, seq in seqs.items():
        header.contigs.add(name, length=seq.size)
    header.add_line('##FORMAT=<ID=GT,Number=1,Type=String,Description="Phased genotype">')
    header.add_sample(SAMPLE)
    plain = path.with_suffix("")  # truth.vcf; tabix_index bgzips it to path
    with pysam.VariantFile(str(plain), "w", header=header) as vcf:
        for contig, pos, ref, alt, gt in variants:
            rec = vcf.new_record(contig=contig, start=pos, alleles=(ref, alt), filter="PASS")
            rec.samples[SAMPLE]["GT"] = gt
            rec.samples[SAMPLE].phased = True
            vcf.write(rec)
    pysam.tabix_index(str(plain), preset="vcf", force=True)


def _write_manifest(ex: SimulatedExample, p: dict, seqs, tracks, variants, n_pairs: int) -> None:
    def count(items) -> dict[str, int]:
        return dict(Counter(items))
    kinds = ["snv" if len(r) == len(a) else "insertion" if len(a) > len(r) else "deletion"
             for _, _, r, a, _ in variants]
    manifest = {
        "genoformer_version": __version__, "numpy_version": np.__version__, "seed": p["seed"],
        "parameters": p, "sample": SAMPLE,
        "contigs": {name: int(seq.size) for name, seq in seqs.items()},
        "files": {k: v.name for k, v in vars(ex).items() if k != "out_dir"},
        "variants": {"total": len(variants), "by_type": count(kinds),
                     "by_genotype": count(["hom_alt" if gt == (1, 1) else "het"
                                           for *_, gt in variants])},
        "features": count([t[3] for t in tracks]),
        "motifs": count([t[4] for t in tracks if t[3] == "motif"]),
        "read_pairs": n_pairs, "motif_patterns": MOTIFS,
        "n_runs": [[name, int(s), int(e)] for name, seq in seqs.items()
                   for s, e in zip(*runs(seq == ord("N")))],
    }
    ex.manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    ex.readme.write_text(README.format(version=__version__, **p, pairs=n_pairs,
                                       n_variants=len(variants), command_line=_command_line(p)))


def _command_line(p: dict) -> str:
    """The CLI call that writes this example (other parameters: see manifest.json)."""
    contigs = " ".join(f"--contig {name}:{length}" for name, length in p["contigs"])
    return f"genoformer simulate --seed {p['seed']} --coverage {p['coverage']:g} {contigs}"



README = """\
Simulated example written by genoformer {version}: {command_line}
Every file is synthetic; the same seed rewrites the same files. manifest.json lists the
parameters and what was planted. BED files are 0-based half-open; the VCF is 1-based.

reference.fa(.fai)   random genome, regional GC, CpG-depleted outside CpG islands;
                     lowercase = soft-masked repeats (repeats.bed); one 1 kb N run
reads.bam(.bai)      {pairs} read pairs, {read_length} bp, ~{coverage}x, insert
                     ~N({insert_mean}, {insert_sd}); TRUE alignments (a read ending near an
                     indel aligned as a local aligner would), MAPQ 60, RG/SM SIM1;
                     substitution errors drawn from each base's quality; planted
                     artefacts: a paralog's reads (names *_paralog_*, MAPQ 0-30) and
                     strand-specific errors (simulate/reads.py)
truth.vcf.gz(.tbi)   {n_variants} phased SNVs and 1-10 bp indels (half of the indels in
                     tandem repeats), sample SIM1
confident.bed        where the truth is complete: contigs minus N and 200 bp ends
motifs.bed           planted TATA boxes (TATAAAAG) and CTCF-like cores (CCGCGNGGNGGCAG)
cpg_islands.bed      CpG islands: GC >= 0.6 and CpG observed/expected >= 0.6
repeats.bed          repeat family SIMREP1 (~2% diverged copies) and tandem repeats
"""
