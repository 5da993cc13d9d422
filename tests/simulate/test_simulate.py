"""The simulated example, checked against pysam's reading of the files it wrote."""
from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pysam
import pytest
from click.testing import CliRunner

import genoformer.simulate.genome as sim
from genoformer.commands.simulate import simulate as simulate_command
from genoformer.errors import OutputError, UsageError
from genoformer.simulate.genome import simulate

SMALL = dict(contigs=(("chrA", 20_000), ("chrB", 10_000)), coverage=20, variant_rate=1 / 250,
             indel_fraction=0.3)
COMPLEMENT = str.maketrans("ACGTNacgtn", "TGCANtgcan")


@pytest.fixture(scope="module")
def example(tmp_path_factory):
    return simulate(tmp_path_factory.mktemp("sim") / "ex", seed=11, **SMALL)


@pytest.fixture(scope="module")
def genome(example) -> dict[str, str]:
    with pysam.FastaFile(str(example.reference)) as fa:
        return {name: fa.fetch(name) for name in fa.references}


@pytest.fixture(scope="module")
def truth(example) -> list[tuple[str, int, str, str, tuple]]:
    with pysam.VariantFile(str(example.truth_vcf)) as vcf:
        return [(r.contig, r.start, r.ref, r.alts[0], r.samples["SIM1"]["GT"]) for r in vcf]


def read_bed(path) -> list[list]:
    return [[int(f) if f.isdigit() else f for f in line.split("\t")]
            for line in path.read_text().splitlines()]


def fingerprint(ex) -> dict[str, str]:
    digests = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
               for p in (ex.reference, ex.truth_vcf, ex.confident_bed, ex.motifs_bed,
                         ex.cpg_islands_bed, ex.repeats_bed, ex.manifest)}
    with pysam.AlignmentFile(str(ex.reads)) as bam:
        digests["bam records"] = hashlib.sha256(
            "\n".join(r.to_string() for r in bam.fetch(until_eof=True)).encode()).hexdigest()
    return digests


def test_same_seed_same_files_other_seed_differs(example, tmp_path):
    again = fingerprint(simulate(tmp_path / "again", seed=11, **SMALL))
    assert again == fingerprint(example)
    other = fingerprint(simulate(tmp_path / "other", seed=12, **SMALL))
    for name in ("reference.fa", "truth.vcf.gz", "repeats.bed", "bam records"):
        assert other[name] != again[name], name


def test_bam_is_indexed_sorted_and_paired(example, genome):
    with pysam.AlignmentFile(str(example.reads)) as bam:
        assert bam.check_index()
        assert bam.header["HD"]["SO"] == "coordinate"
        assert bam.header["RG"][0]["SM"] == "SIM1"
        lengths = {sq["SN"]: sq["LN"] for sq in bam.header["SQ"]}
        assert lengths == {k: len(v) for k, v in genome.items()}
        reads = list(bam.fetch(until_eof=True))
    keys = [(r.reference_id, r.reference_start) for r in reads]
    assert keys == sorted(keys)
    by_name: dict[str, list] = {}
    for r in reads:
        by_name.setdefault(r.query_name, []).append(r)
        paralog = "_paralog_" in r.query_name  # a diverged paralog's reads map here at low MAPQ (test_realistic_reads)
        assert r.get_tag("RG") == "SIM1" and (r.mapping_quality <= 30 if paralog else r.mapping_quality == 60)
        assert "N" not in genome[r.reference_name][r.reference_start:r.reference_end].upper()
    assert all(len(pair) == 2 for pair in by_name.values())
    for a, b in by_name.values():
        assert a.is_paired and a.is_proper_pair and a.is_read1 != b.is_read1
        assert a.is_reverse != b.is_reverse and a.mate_is_reverse == b.is_reverse
        assert a.next_reference_start == b.reference_start
        assert b.next_reference_start == a.reference_start
        span = max(a.reference_end, b.reference_end) - min(a.reference_start, b.reference_start)
        assert abs(a.template_length) == span and a.template_length == -b.template_length
        left = a if (a.reference_start, a.is_reverse) < (b.reference_start, b.is_reverse) else b
        assert left.template_length > 0
    strands = [r.is_read1 == r.is_reverse for r in reads]
    assert 0.4 < np.mean(strands) < 0.6  # read 1 lies on either strand


def own_reads(read) -> bool:
    """Reads of the sample's own haplotypes, not the paralog's mismapped ones."""
    return "_paralog_" not in read.query_name


def test_mismatches_off_variants_follow_the_qualities(example, genome, truth):
    snvs = {(c, p) for c, p, ref, alt, _ in truth if len(ref) == len(alt)}
    # the planted strand-specific errors: where 3+ reads read the same wrong base (random errors never do here)
    wrong: dict = {}
    with pysam.AlignmentFile(str(example.reads)) as bam:
        for r in filter(own_reads, bam.fetch(until_eof=True)):
            for q, p in r.get_aligned_pairs(matches_only=True):
                if r.query_sequence[q] != genome[r.reference_name][p].upper():
                    key = (r.reference_name, p, r.query_sequence[q])
                    wrong[key] = wrong.get(key, 0) + 1
    artefacts = {(c, p) for (c, p, _), n in wrong.items() if n >= 3}
    assert artefacts  # STRAND_ERROR_RATE plants some
    observed, expected = 0, 0.0
    with pysam.AlignmentFile(str(example.reads)) as bam:
        for r in filter(own_reads, bam.fetch(until_eof=True)):
            ref = genome[r.reference_name]
            pairs = [(q, p) for q, p in r.get_aligned_pairs(matches_only=True)
                     if (r.reference_name, p) not in snvs and (r.reference_name, p) not in artefacts]
            query, qual = r.query_sequence, r.query_qualities
            observed += sum(query[q] != ref[p].upper() for q, p in pairs)
            expected += sum(10 ** (-qual[q] / 10) for q, _ in pairs)
    assert expected > 500
    assert 0.85 < observed / expected < 1.15


def test_snv_allele_fractions(example, truth):
    fractions = {"het": [], "hom": []}
    with pysam.AlignmentFile(str(example.reads)) as bam:
        for contig, pos, ref, alt, gt in truth:
            if len(ref) != len(alt):
                continue
            counts = np.array(bam.count_coverage(contig, pos, pos + 1, read_callback=own_reads), dtype=float)[:, 0]
            share = counts["ACGT".index(alt)] / counts.sum()
            fractions["hom" if gt == (1, 1) else "het"].append(share)
    het, hom = np.array(fractions["het"]), np.array(fractions["hom"])
    assert het.size > 10 and hom.size > 5
    assert 0.42 < het.mean() < 0.58 and ((het > 0.1) & (het < 0.9)).all()
    assert hom.mean() > 0.97 and hom.min() > 0.85


def test_indels_show_in_pileup(example, truth):
    fractions = {"het": [], "hom": []}
    with pysam.AlignmentFile(str(example.reads)) as bam:
        for contig, pos, ref, alt, gt in truth:
            if len(ref) == len(alt):
                continue
            indels = [r.indel for column in bam.pileup(contig, pos, pos + 1, truncate=True,
                                                       min_base_quality=0)
                      for r in column.pileups if own_reads(r.alignment)]
            share = np.mean([i == len(alt) - len(ref) for i in indels])
            assert all(i in (0, len(alt) - len(ref)) for i in indels)
            fractions["hom" if gt == (1, 1) else "het"].append(share)
    het, hom = np.array(fractions["het"]), np.array(fractions["hom"])
    assert het.size >= 5 and hom.size >= 3
    assert 0.3 < het.mean() < 0.6 and hom.mean() > 0.85


def test_vcf_matches_reference_and_manifest(example, genome, truth):
    with pysam.VariantFile(str(example.truth_vcf)) as vcf:
        assert list(vcf.header.samples) == ["SIM1"]
        assert {c: vcf.header.contigs[c].length for c in vcf.header.contigs} == \
            {k: len(v) for k, v in genome.items()}
        assert all(r.samples["SIM1"].phased for r in vcf.fetch("chrB"))
    confident = read_bed(example.confident_bed)
    for i, (contig, pos, ref, alt, gt) in enumerate(truth):
        assert genome[contig][pos:pos + len(ref)].upper() == ref
        assert set(ref + alt) <= set("ACGT") and ref != alt and gt in ((0, 1), (1, 0), (1, 1))
        if len(ref) != len(alt):  # anchored indel that cannot shift left, i.e. left-aligned
            assert ref[0] == alt[0] and min(len(ref), len(alt)) == 1
            assert 1 <= abs(len(ref) - len(alt)) <= 10
            assert ref[-1] != ref[0] if len(ref) > 1 else alt[-1] != alt[0]
        assert any(c == contig and s <= pos and pos + len(ref) <= e for c, s, e in confident)
        if i and truth[i - 1][0] == contig:
            assert pos - truth[i - 1][1] >= 15
    assert [c for c, *_ in truth] == sorted((c for c, *_ in truth), key=list(genome).index)
    manifest = json.loads(example.manifest.read_text())
    kinds = ["snv" if len(r) == len(a) else "insertion" if len(a) > len(r) else "deletion"
             for _, _, r, a, _ in truth]
    assert manifest["variants"]["by_type"] == {k: kinds.count(k) for k in set(kinds)}
    genotypes = ["hom_alt" if gt == (1, 1) else "het" for *_, gt in truth]
    assert manifest["variants"]["by_genotype"] == {k: genotypes.count(k) for k in set(genotypes)}


def test_soft_masked_bases_are_the_repeats(example, genome):
    rows = read_bed(example.repeats_bed)
    for contig, seq in genome.items():
        masked = np.frombuffer(seq.encode(), np.uint8) >= ord("a")
        expected = np.zeros(len(seq), bool)
        for c, s, e, *_ in rows:
            expected[s:e] |= c == contig
        assert (masked == expected).all()
    copies = []
    for contig, start, end, name, _, strand in rows:
        seq = genome[contig][start:end].upper()
        if name.startswith("("):  # exact tandem repeat of the unit in its name
            unit = name[1:-2]
            assert seq == (unit * len(seq))[:len(seq)] and len(seq) % len(unit) == 0
        else:
            copies.append(seq if strand == "+" else seq.translate(COMPLEMENT)[::-1])
    assert len(copies) >= 4 and len({len(c) for c in copies}) == 1
    identity = [np.mean([x == y for x, y in zip(copies[0], c)]) for c in copies[1:]]
    assert all(0.9 < i < 1.0 for i in identity)  # ~2% divergence from the consensus each


def test_motifs_at_their_positions(example, genome):
    patterns = {"TATA_box": "TATAAAAG", "CTCF_core": "CCGCGNGGNGGCAG"}
    rows = read_bed(example.motifs_bed)
    for contig, start, end, name, _, strand in rows:
        seq = genome[contig][start:end]
        seq = seq if strand == "+" else seq.translate(COMPLEMENT)[::-1]
        assert re.fullmatch(patterns[name].replace("N", "[ACGT]"), seq), (contig, start, name)
    assert json.loads(example.manifest.read_text())["motifs"] == \
        {name: sum(r[3] == name for r in rows) for name in patterns}


def gc_cpg(seq: str) -> tuple[float, float]:
    c, g, cg = seq.count("C"), seq.count("G"), seq.count("CG")
    return (c + g) / len(seq), cg * len(seq) / (c * g)


def test_cpg_islands_and_depleted_background(example, genome):
    islands = read_bed(example.cpg_islands_bed)
    assert len(islands) >= 2
    for contig, start, end, _ in islands:
        gc, obs_exp = gc_cpg(genome[contig][start:end].upper())
        assert 500 <= end - start <= 1500 and gc >= 0.6 and obs_exp >= 0.6
    background = genome["chrB"]
    for contig, start, end, _ in islands:
        if contig == "chrB":
            background = background[:start] + background[end:]
    assert gc_cpg(background)[1] < 0.45


def test_confident_bed_is_contigs_minus_n_and_ends(example, genome):
    expected = []
    for contig, seq in genome.items():
        good = [m.span() for m in re.finditer("[^N]+", seq[200:len(seq) - 200])]
        expected += [[contig, s + 200, e + 200] for s, e in good]
    assert read_bed(example.confident_bed) == expected
    assert "N" * 1000 in genome["chrA"] and "N" not in genome["chrB"]


@pytest.mark.parametrize("change", [dict(seed=-1), dict(contigs=()), dict(contigs=(("chrA", 500),)),
                                    dict(contigs=(("a b", 20_000),)), dict(read_length=10),
                                    dict(coverage=0), dict(het_fraction=1.5)])
def test_bad_parameters_are_usage_errors(tmp_path, change):
    with pytest.raises(UsageError):
        simulate(tmp_path / "x", **{"seed": 0, **SMALL, **change})
    assert not (tmp_path / "x").exists()


def test_cli_writes_example_and_refuses_non_empty_dir(tmp_path):
    out = tmp_path / "example"
    result = CliRunner().invoke(simulate_command, ["--out", str(out), "--seed", "3"])
    assert result.exit_code == 0, result.output
    assert str(out) in result.output and str(out / "reads.bam") in result.output
    before = fingerprint(sim.SimulatedExample.in_dir(out))
    result = CliRunner().invoke(simulate_command, ["--out", str(out), "--seed", "4"])
    assert isinstance(result.exception, OutputError) and result.exception.exit_code == 4
    assert fingerprint(sim.SimulatedExample.in_dir(out)) == before
    result = CliRunner().invoke(simulate_command, ["--out", str(out), "--seed", "4", "--force",
                                                   "--contig", "chrZ:12,000", "--coverage", "5"])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "manifest.json").read_text())["contigs"] == {"chrZ": 12_000}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["example"]


def test_cli_variant_rate(tmp_path):
    """--variant-rate reaches the simulation: 0.01 on ~11,600 candidate bases plants ~100 variants (0.001: ~12)."""
    out = tmp_path / "dense"
    result = CliRunner().invoke(simulate_command, ["--out", str(out), "--contig", "chrZ:12000", "--coverage", "2",
                                                   "--variant-rate", "0.01"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parameters"]["variant_rate"] == 0.01
    with pysam.VariantFile(str(out / "truth.vcf.gz")) as vcf:
        assert len(list(vcf)) == manifest["variants"]["total"] > 60
    result = CliRunner().invoke(simulate_command, ["--out", str(tmp_path / "x"), "--variant-rate", "0.1"])
    assert isinstance(result.exception, UsageError) and "variant_rate" in str(result.exception)


def test_failed_run_leaves_old_example_and_no_partial(example, tmp_path, monkeypatch):
    out = tmp_path / "ex"
    simulate(out, seed=1, **SMALL)
    before = fingerprint(sim.SimulatedExample.in_dir(out))

    def fail(*args, **kwargs):
        raise RuntimeError("killed while writing")
    monkeypatch.setattr(sim, "_write_manifest", fail)
    with pytest.raises(RuntimeError):
        simulate(out, seed=2, force=True, **SMALL)
    with pytest.raises(RuntimeError):
        simulate(tmp_path / "new", seed=2, **SMALL)
    assert fingerprint(sim.SimulatedExample.in_dir(out)) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ex"]
