"""Simulate a long-range task: per-base labels at a site whose class is set by a partner motif far away.

As an enhancer sets a promoter's activity, each pair is a SITE motif (the labelled bases) and, exactly
`distance` bases upstream or downstream of it (a seeded coin; the partner's start minus the site's
start is -distance or +distance), a PARTNER motif of type A or B (half of each a contig, in seeded
order). The site's bases
get its partner's type as their class. The site reads the same in both classes and the background
is random, so nothing nearer than `distance` bases tells A from B.

`simulate_long_range(out_dir, seed, distances, pairs)` writes one contig per distance, `lr<distance>`,
of `pairs` blocks of 3 x distance + 2 x MOTIF_LENGTH bases (plus EDGE bases at each end): the site
in the middle of its block, its partner `distance` away, so the nearest other partner is at least
2 x distance + 2 x MOTIF_LENGTH bases from a site. Background: random bases, G or C with probability
`gc`; no motif occurs anywhere but where it is planted (chance matches are mutated away).

Files (0-based half-open coordinates):
- reference.fa (+ .fai);
- long_range_A.bed, long_range_B.bed: the sites whose partner is A, or B. Given to the `pattern`
  task (--bed both files) they are its two classes, long_range_A and long_range_B;
- pairs.tsv: one row a pair: contig, site_start, site_end, partner_start, partner_end, partner (A/B),
  offset (partner_start - site_start);
- manifest.json (parameters, motifs, counts) and README.txt.
The same seed writes byte-identical files (under a given numpy version).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from genoformer import __version__
from genoformer.errors import UsageError
from genoformer.simulate.files import publish, write_bed, write_fasta
from genoformer.simulate.reads import ACGT

SITE = "GTCAGCTAGTCA"
PARTNERS = {"A": "ACCGGTAACCGT", "B": "TGGCATTGGCAT"}
MOTIF_LENGTH = len(SITE)
EDGE = 1000
MIN_DISTANCE = 50
MAX_BASES = 1_000_000_000  # all contigs together: a typo in --long-range-distance should not fill the disk
PAIRS_HEADER = ("contig", "site_start", "site_end", "partner_start", "partner_end", "partner", "offset")


@dataclass(frozen=True)
class LongRangeExample:
    """Paths of one long-range example (all inside `out_dir`)."""
    out_dir: Path
    reference: Path
    class_beds: dict[str, Path]  # partner type -> BED of the sites it labels
    pairs: Path
    manifest: Path
    readme: Path

    @classmethod
    def in_dir(cls, out_dir: str | os.PathLike) -> LongRangeExample:
        d = Path(out_dir)
        return cls(d, d / "reference.fa", {t: d / f"long_range_{t}.bed" for t in PARTNERS}, d / "pairs.tsv",
                   d / "manifest.json", d / "README.txt")


def block_length(distance: int) -> int:
    return 3 * distance + 2 * MOTIF_LENGTH


def contig_name(distance: int) -> str:
    return f"lr{distance}"


def simulate_long_range(out_dir: str | os.PathLike, seed: int = 0, *, distances: Sequence[int] = (10_000,),
                        pairs: int = 64, gc: float = 0.41, force: bool = False) -> LongRangeExample:
    """Write a long-range example to `out_dir` and return its paths (see the module docstring).

    Raises UsageError for bad parameters and OutputError when `out_dir` exists and is not empty
    (unless `force`) or cannot be written.
    """
    params = {"seed": seed, "distances": [int(d) for d in distances], "pairs": pairs, "gc": gc}
    _check(params, distances)
    publish(Path(out_dir), force, lambda tmp: _build(LongRangeExample.in_dir(tmp), params))
    return LongRangeExample.in_dir(out_dir)


def _check(p: dict, distances: Sequence[int]) -> None:
    def integer(x) -> bool:
        return isinstance(x, (int, np.integer)) and not isinstance(x, bool)
    total = sum(2 * EDGE + p["pairs"] * block_length(d) for d in p["distances"]) if integer(p["pairs"]) else 0
    rules = [
        ("seed", integer(p["seed"]) and p["seed"] >= 0, "an integer >= 0"),
        ("distances", len(distances) > 0 and all(integer(d) and d >= MIN_DISTANCE for d in distances)
         and len(set(p["distances"])) == len(p["distances"]), f"one or more distinct integers >= {MIN_DISTANCE}"),
        ("pairs", integer(p["pairs"]) and p["pairs"] >= 2, "an integer >= 2"),
        ("gc", isinstance(p["gc"], (int, float)) and 0 < p["gc"] < 1, "between 0 and 1"),
        ("distances", total <= MAX_BASES, f"with pairs, at most {MAX_BASES:,} bases in all (got {total:,})")]
    for key, ok, rule in rules:
        if not ok:
            raise UsageError(f"simulate: long-range {key} must be {rule} (got {p[key]!r})")


def _codes(motif: str) -> np.ndarray:
    return np.frombuffer(motif.encode(), np.uint8)


def _occurrences(seq: np.ndarray, motif: str) -> np.ndarray:
    """Start of every exact occurrence of `motif` in the uppercase sequence."""
    n = seq.size - len(motif) + 1
    hit = np.ones(max(n, 0), bool)
    for j, base in enumerate(_codes(motif)):
        hit &= seq[j:j + n] == base
    return np.flatnonzero(hit)


def _layout(rng: np.random.Generator, distance: int, pairs: int) -> list[tuple[int, int, str]]:
    """(site start, partner start, partner type) of each pair of a contig."""
    kinds = rng.permutation(np.arange(pairs) % 2)  # half A, half B (one more A when odd), in seeded order
    out = []
    for i in range(pairs):
        site = EDGE + i * block_length(distance) + (block_length(distance) - MOTIF_LENGTH) // 2
        side = int(rng.integers(2))
        out.append((site, site + (distance if side else -distance), "AB"[int(kinds[i])]))
    return out


def _contig(rng: np.random.Generator, distance: int, p: dict) -> tuple[np.ndarray, list[tuple[int, int, str]]]:
    layout = _layout(rng, distance, p["pairs"])
    length = 2 * EDGE + p["pairs"] * block_length(distance)
    u = rng.random(length)
    gc = p["gc"]
    seq = ACGT[(u >= (1 - gc) / 2).astype(np.uint8) + (u >= 0.5) + (u >= (1 + gc) / 2)]
    planted = np.zeros(length, bool)
    for site, partner, kind in layout:
        for start, motif in ((site, SITE), (partner, PARTNERS[kind])):
            seq[start:start + MOTIF_LENGTH] = _codes(motif)
            planted[start:start + MOTIF_LENGTH] = True
    expected = {SITE: {s for s, _, _ in layout}} | {
        m: {start for _, start, kind in layout if kind == t} for t, m in PARTNERS.items()}
    while True:  # mutate chance occurrences (and any a mutation creates) away, never a planted base
        stray = [(start, motif) for motif in expected for start in _occurrences(seq, motif).tolist()
                 if start not in expected[motif]]
        if not stray:
            return seq, layout
        for start, motif in stray:
            free = start + int(np.flatnonzero(~planted[start:start + MOTIF_LENGTH])[0])
            seq[free] = ACGT[(int(np.flatnonzero(ACGT == seq[free])[0]) + int(rng.integers(1, 4))) % 4]


def _build(ex: LongRangeExample, p: dict) -> None:
    rng = np.random.default_rng(p["seed"])
    seqs, rows = {}, []
    for distance in p["distances"]:
        name = contig_name(distance)
        seqs[name], layout = _contig(rng, distance, p)
        rows += [(name, s, s + MOTIF_LENGTH, t, t + MOTIF_LENGTH, kind, t - s) for s, t, kind in layout]
    write_fasta(ex.reference, seqs)
    for kind, path in ex.class_beds.items():
        write_bed(path, [(c, s, e, f"site_{kind}_{off:+d}") for c, s, e, _, _, k, off in rows if k == kind])
    write_bed(ex.pairs, [PAIRS_HEADER] + rows)
    manifest = {"genoformer_version": __version__, "numpy_version": np.__version__, "parameters": p,
                "site": SITE, "partners": PARTNERS, "motif_length": MOTIF_LENGTH,
                "contigs": {name: int(seq.size) for name, seq in seqs.items()},
                "pairs_by_partner": {kind: sum(r[5] == kind for r in rows) for kind in PARTNERS},
                "files": {"reference": ex.reference.name, "pairs": ex.pairs.name,
                          **{f"class_{k}": v.name for k, v in ex.class_beds.items()}}}
    ex.manifest.write_text(json.dumps(manifest, indent=2) + "\n")
    ex.readme.write_text(README.format(version=__version__, seed=p["seed"], pairs=p["pairs"], gc=p["gc"],
                                       distances=", ".join(map(str, p["distances"])), site=SITE,
                                       **{f"partner_{k}": v for k, v in PARTNERS.items()}))


README = """\
Long-range example written by genoformer {version} (seed {seed}): one contig per partner distance
({distances} bp), {pairs} pairs each. Every file is synthetic; the same seed rewrites the same files.

reference.fa(.fai)     random background (GC {gc}); each pair: the site {site} and, exactly
                       the distance upstream or downstream, a partner {partner_A} (A) or {partner_B} (B)
long_range_A.bed       sites whose partner is A: the two classes of `genoformer train --task pattern
long_range_B.bed       sites whose partner is B   --bed long_range_A.bed --bed long_range_B.bed`
pairs.tsv              every pair: site, partner, its type and offset (0-based half-open)
The site reads the same in both classes: only the partner, `distance` bases away, tells them apart.
"""
