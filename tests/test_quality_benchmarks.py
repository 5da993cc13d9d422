"""benchmarks/quality/: the shared helpers, each baseline's core against an independent computation, and each
script's command line (no training here: the benchmarks themselves are run by hand)."""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
import zipfile
from pathlib import Path

import numpy as np
import pysam
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "quality"))
from quality_common import Budget, parse_budget, table
from variant_callers import allele_fraction_calls

REGION = "chr20:10,000,847-10,004,000"


@pytest.mark.parametrize("text, budget", [("300", Budget(steps=300)), ("300steps", Budget(steps=300)),
                                          ("6m", Budget(minutes=6.0)), ("2.5min", Budget(minutes=2.5))])
def test_budget_steps_or_minutes(text, budget):
    assert parse_budget(text) == budget


@pytest.mark.parametrize("text", ["0", "1.5", "5h", "m", ""])
def test_bad_budget(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_budget(text)


def test_table_aligns_text_left_numbers_right():
    text = table([{"name": "a", "x": 0.5}, {"name": "bbb", "x": float("nan")}],
                 [("name", "name", ""), ("x", "x", ".2f")])
    assert text.splitlines() == ["name     x", "----------", "a     0.50", "bbb      -"]


def test_allele_fraction_caller_matches_pysam_pileup(chr20, tmp_path):
    """Every call, and only those, where pysam's pileup gives depth >= 5 and a non-reference base at
    >= 20 % of the depth (counting bases of quality >= 13); GT 1/1 from 80 %."""
    vcf = allele_fraction_calls(REGION, tmp_path / "af.vcf.gz")
    got = {(r.pos, r.ref, r.alts[0], r.samples[0]["GT"]) for r in pysam.VariantFile(str(vcf))}
    expected = set()
    with pysam.AlignmentFile(str(chr20["bam"])) as bam, pysam.FastaFile(str(chr20["fasta"])) as fasta:
        for col in bam.pileup("chr20", 10_000_846, 10_004_000, truncate=True, stepper="nofilter",
                              ignore_overlaps=False, min_base_quality=0, max_depth=100_000):
            reads = [p for p in col.pileups if not p.is_refskip]
            depth = len(reads)
            counts = {b: 0 for b in "ACGT"}
            for p in reads:
                if not p.is_del and p.alignment.query_qualities[p.query_position] >= 13:
                    base = p.alignment.query_sequence[p.query_position]
                    counts[base] = counts.get(base, 0) + 1
            ref = fasta.fetch("chr20", col.reference_pos, col.reference_pos + 1).upper()
            alt = max((b for b in "ACGT" if b != ref), key=lambda b: counts[b])
            fraction = counts[alt] / depth if depth else 0
            if depth >= 5 and fraction >= 0.2:
                expected.add((col.reference_pos + 1, ref, alt, (1, 1) if fraction >= 0.8 else (0, 1)))
    assert got == expected
    assert len(got) > 10  # the region holds real SNVs: the comparison is not vacuous
    assert np.all([pos >= 10_000_847 for pos, *_ in got])


def test_bcftools_baseline_runs_from_pysam_and_finds_the_giab_snvs(chr20, tmp_path):
    """pysam's bundled bcftools (no system bcftools) calls every GIAB truth SNV of the confident BED in the
    region, at the truth's position and alleles, and nothing outside the region."""
    from variant_callers import bcftools_calls

    vcf, version = bcftools_calls(REGION, tmp_path / "bcf.vcf.gz")
    assert version.startswith("bcftools 1.")
    calls = {(r.pos, r.ref, alt) for r in pysam.VariantFile(str(vcf)) for alt in r.alts}
    assert all(10_000_847 <= pos <= 10_004_000 for pos, _, _ in calls)
    confident = [line.split("\t") for line in chr20["bed"].read_text().splitlines()]
    with pysam.VariantFile(str(chr20["vcf"])) as truth_vcf:
        truth = {(r.pos, r.ref, r.alts[0]) for r in truth_vcf.fetch("chr20", 10_000_846, 10_004_000)
                 if len(r.ref) == len(r.alts[0]) == 1 and any(int(s) < r.pos <= int(e) for _, s, e in confident)}
    assert len(truth) > 10 and truth <= calls


def test_cb513_reading_and_flip_overlap_match_pysam(shared_data, tmp_path):
    """CB513's CSV agrees with the data README's counts; the CB513 sequences shared with FLIP's SET=train
    are those pysam finds by exact match (2), and dropping them removes exactly their residues."""
    from protein_ss_quality import CB513_CSV, FLIP_ZIP, fasta, read_cb513, shared_with

    cb = read_cb513()
    assert len(cb.ids) == 511 and sum(map(len, cb.sequences)) == 144_011
    letters = np.array(list("".join(cb.labels)))
    assert [(letters == c).sum() for c in "CHE"] == [63_084, 49_006, 31_921]  # data README, dssp3
    with zipfile.ZipFile(FLIP_ZIP) as zf:
        zf.extractall(tmp_path)
    flip = tmp_path / "splits"
    with pysam.FastxFile(str(flip / "sampled.fasta")) as fh:
        train_ids = {r.name for r in fh if "SET=train" in r.comment.split()}
    with pysam.FastxFile(str(flip / "sequences.fasta")) as fh:
        train_seqs = {r.sequence for r in fh if r.name in train_ids}
    with pysam.FastxFile(str(CB513_CSV.with_name("CB513.fasta"))) as fh:
        cb_seqs = {r.name: r.sequence for r in fh}
    expected = {name for name, seq in cb_seqs.items() if seq in train_seqs}
    assert len(expected) == 2
    shared = shared_with(cb, fasta(flip / "sequences.fasta"), fasta(flip / "sampled.fasta"))
    assert set(shared) == expected
    kept = cb.drop(set(shared))
    assert len(kept.ids) == 509
    assert sum(map(len, kept.sequences)) == 144_011 - sum(len(cb_seqs[n]) for n in expected)


def test_q3_and_majority_by_hand():
    from protein_ss_quality import CB513, q3

    def yes(n: int) -> np.ndarray:
        return np.ones(n, dtype=bool)

    cb = CB513(["a", "b"], ["MKV", "GSAP"], ["HEC", "CCCH"], [yes(3), np.array([1, 1, 0, 1], dtype=bool)],
               [yes(3), yes(4)])
    classes = ["C", "E", "H"]
    predicted = [np.array([2, 0, 0]), np.array([0, 1, 1, 2])]  # H C C | C E E H
    # resolved: 6 residues (the third of b is not), right: H, C | C, H = 4; majority C: 3 of 6
    assert q3(cb, predicted, classes, "resolved") == (4 / 6, "C", 3 / 6, 6)
    # all 7: right H, C | C, H = 4; C is 4 of 7
    assert q3(cb, predicted, classes, "cb513_mask") == (4 / 7, "C", 4 / 7, 7)


# --- shared: genoformer - baseline over seeds -----------------------------------------------------------

def test_summary_rows_pair_differences_by_seed():
    from quality_common import Measurement, summary_rows

    runs = [Measurement("acc", 0.5, {"lr": 0.6}), Measurement("acc", 0.7, {"lr": 0.6}),
            Measurement("acc", float("nan"), {"lr": 0.6})]  # a NaN score (nothing scored) is left out
    rows = {r["row"]: r for r in summary_rows(runs)}
    assert rows["genoformer"]["n"] == 2 and rows["genoformer"]["mean"] == pytest.approx(0.6)
    assert rows["lr"]["n"] == 3
    diff = rows["genoformer - lr"]
    assert (diff["mean"], diff["min"], diff["max"]) == pytest.approx((0.0, -0.1, 0.1))


def test_with_options_rejects_unknown_training_options():
    from quality_common import TrainConfig, with_options

    from genoformer.errors import UsageError

    config = TrainConfig(task="mlm", k=6)
    assert with_options(config, {"k": 1, "attention": "local"}).k == 1
    with pytest.raises(UsageError, match="not_an_option"):
        with_options(config, {"not_an_option": True})


# --- logistic regression ----------------------------------------------------------------------------------

def test_logistic_fit_is_the_penalised_optimum():
    """At the fitted weights the gradient of mean cross-entropy + l2/2 |W|^2, computed here in numpy, vanishes."""
    from logistic import fit_logistic

    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 5)) * [1, 2, 3, 0.5, 1] + 4
    y = (X[:, 0] + 0.5 * X[:, 1] + rng.normal(size=300) > 5).astype(int) + (X[:, 2] > 6)
    l2 = 0.01
    model = fit_logistic(X, y, l2)
    Z = (X - model.mean.numpy()) / model.scale.numpy()
    W, b = model.weight.numpy().astype(float), model.bias.numpy().astype(float)
    s = Z @ W + b
    p = np.exp(s - s.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    residual = (p - np.eye(3)[y]) / len(y)
    assert np.abs(Z.T @ residual + l2 * W).max() < 1e-4
    assert np.abs(residual.sum(0)).max() < 1e-4


def test_onehot_logistic_equals_dense_one_hot_scores():
    from logistic import fit_onehot_logistic

    rng = np.random.default_rng(1)
    codes = rng.integers(0, 4, size=(400, 3))
    y = (codes[:, 1] == 2).astype(int)  # class 1 exactly where the middle symbol is 2
    model = fit_onehot_logistic(codes, 4, y, 1e-4)
    assert (model.predict(codes) == y).all()
    dense = np.eye(4)[codes].reshape(len(codes), -1) @ model.weight.numpy().reshape(12, 2) + model.bias.numpy()
    assert np.allclose(model.scores(codes), dense, atol=1e-5)


# --- classify: k-mer logistic regression ----------------------------------------------------------------

def test_kmer_counts_match_a_plain_count():
    from itertools import product

    from kmer_baseline import kmer_counts

    rng = np.random.default_rng(2)
    seqs = ["".join(rng.choice(list("ACGTN"), p=[0.24, 0.24, 0.24, 0.24, 0.04], size=n)) for n in (2, 3, 40, 57)]
    seqs[1] = seqs[1].lower()
    for k in (1, 2, 3):
        index = {"".join(m): i for i, m in enumerate(product("ACGT", repeat=k))}
        expected = np.zeros((len(seqs), 4 ** k))
        for row, s in enumerate(seqs):
            for kmer, n in Counter(s.upper()[i:i + k] for i in range(len(s) - k + 1)).items():
                if kmer in index:
                    expected[row, index[kmer]] = n
        assert np.array_equal(kmer_counts(seqs, k), expected)


def test_kmer_logistic_regression_finds_a_planted_motif():
    """Sequences holding GATTACA twice are class 1: chosen and fitted on training sequences only, the model
    labels fresh sequences right (chance: 0.5)."""
    from kmer_baseline import choose_and_fit

    from genoformer.data.sequences import LabelledSequences

    def draw(n: int, seed: int) -> LabelledSequences:
        rng = np.random.default_rng(seed)
        out = LabelledSequences("planted.csv")
        for i in range(n):
            s = list(rng.choice(list("ACGT"), size=80))
            if i % 2:
                for at in rng.choice(70, size=2, replace=False) // 35 * 35 + rng.integers(0, 25, 2):
                    s[at:at + 7] = "GATTACA"
            out.sequences.append("".join(s))
            out.labels.append(str(i % 2))
            out.names.append(str(i))
            out.where.append(str(i))
            out.masks.append(None)
            out.tags.append({})
        return out

    train, test = draw(160, 3), draw(100, 4)
    choice = choose_and_fit(train, ["0", "1"], seed=0, feature_sets={"2": (2,), "3": (3,)}, l2_grid=(0.01, 0.1))
    assert {(g["feature_set"], g["l2"]) for g in choice.grid} == {("2", 0.01), ("2", 0.1), ("3", 0.01), ("3", 0.1)}
    accuracy = (choice.predict(test.sequences) == np.array([int(x) for x in test.labels])).mean()
    assert accuracy >= 0.9


def test_promoter_validation_is_the_kmer_regressions_quarter_and_never_the_scored_fifth(shared_data, tmp_path):
    """--score-on validation: the file the model reads is the seed's 80 %, and the training code's split of it
    holds out exactly the sequences the k-mer regression chooses its setting on; none of the scored 20 %."""
    from classify_quality import PROMOTERS, VAL_FRACTION, training_split
    from kmer_baseline import VAL_SHARE

    from genoformer.data.sequences import load_sequence_data, split

    assert training_split(argparse.Namespace(score_on="test"), tmp_path, 1) == (str(PROMOTERS), VAL_FRACTION)
    path, fraction = training_split(argparse.Namespace(score_on="validation"), tmp_path / "runs", 1)
    whole = load_sequence_data(str(PROMOTERS), val_fraction=VAL_FRACTION, seed=1)
    written = load_sequence_data(path, val_fraction=fraction, seed=1)
    chosen_on = whole.train.subset(split(whole.train, VAL_SHARE, 1)[1])
    assert (written.val.sequences, written.val.labels) == (chosen_on.sequences, chosen_on.labels)
    assert len(written.train) + len(written.val) == len(whole.train) == 7227
    assert not set(written.train.sequences + written.val.sequences) & set(whole.val.sequences)


# --- protein: window logistic regression and lookup -----------------------------------------------------

def test_residue_windows_pad_outside_the_chain():
    from protein_baseline import AMINO_ACIDS, OTHER, OUTSIDE, windows

    w = windows("MKX", half=2)
    m, k = AMINO_ACIDS.index("M"), AMINO_ACIDS.index("K")
    assert w.tolist() == [[OUTSIDE, OUTSIDE, m, k, OTHER], [OUTSIDE, m, k, OTHER, OUTSIDE],
                          [m, k, OTHER, OUTSIDE, OUTSIDE]]


def test_lookup_and_window_model_by_hand():
    """Lookup: each centre residue's commonest label. Window model: a rule reading the residue before the
    centre (H after A, else C) is learnt exactly; the lookup, reading the centre alone, cannot."""
    from protein_baseline import AMINO_ACIDS, HALF_WINDOW, Lookup, fit_window_model, windows

    codes = np.array([0, 0, 1, 1, 1, 2, 1])
    lookup = Lookup.fit(codes, np.array(list("HHCEECE")))
    assert lookup.predict(np.array([0, 1, 2, 5])).tolist() == ["H", "E", "C", "E"]  # 5 unseen: overall commonest
    rng = np.random.default_rng(5)
    chains = ["".join(rng.choice(list(AMINO_ACIDS), size=60)) for _ in range(40)]
    labels = ["".join("H" if i and s[i - 1] == "A" else "C" for i in range(len(s))) for s in chains]
    data = [(np.concatenate([windows(s) for s in chains[a:b]]), np.array(list("".join(labels[a:b]))))
            for a, b in ((0, 30), (30, 40))]
    model = fit_window_model(data[0], data[1], l2_grid=(1e-4, 1e-3))
    assert (model.predict(data[1][0]) == data[1][1]).all()
    centre = Lookup.fit(data[0][0][:, HALF_WINDOW], data[0][1])
    assert (centre.predict(data[1][0][:, HALF_WINDOW]) == data[1][1]).mean() < 0.99


# --- score-variants: window logistic regression on motif bases ------------------------------------------------

def test_base_windows_pad_outside_the_contig():
    from window_baseline import OTHER, OUTSIDE, windows

    assert windows("AcN", half=2).tolist() == [[OUTSIDE, OUTSIDE, 0, 1, OTHER], [OUTSIDE, 0, 1, OTHER, OUTSIDE],
                                               [0, 1, OTHER, OUTSIDE, OUTSIDE]]


def test_window_baseline_labels_and_snv_diffs_by_hand(tmp_path):
    """Labels: the bases inside motifs.bed's intervals, by a plain loop. Diff: p_alt - p_ref of the motif class,
    computed here from the fitted weights in numpy on windows sliced by hand (an SNV at each contig end too)."""
    from window_baseline import BASES, HALF_WINDOW, MOTIF, OUTSIDE, contig_data, fit_motif_model, score_snvs

    rng = np.random.default_rng(11)
    seqs = {name: "".join(rng.choice(list("ACGTacgN"), size=n)) for name, n in (("a", 300), ("b", 200), ("v", 250))}
    (tmp_path / "ref.fa").write_text("".join(f">{n}\n{s}\n" for n, s in seqs.items()))
    pysam.faidx(str(tmp_path / "ref.fa"))
    bed = [("a", 10, 18), ("a", 100, 114), ("b", 0, 8), ("b", 190, 200), ("v", 50, 64), ("v", 200, 208)]
    (tmp_path / "motifs.bed").write_text("".join(f"{c}\t{s}\t{e}\tm\t0\t+\n" for c, s, e in bed))
    train = contig_data(tmp_path / "ref.fa", tmp_path / "motifs.bed", ["a", "b"])
    assert train[1].tolist() == [int(any(c == n and s <= i < e for c, s, e in bed))
                                 for n in ("a", "b") for i in range(len(seqs[n]))]
    model = fit_motif_model(train, contig_data(tmp_path / "ref.fa", tmp_path / "motifs.bed", ["v"]),
                            l2_grid=(1e-3, 1e-2), max_background=200)
    assert model.fit_bases == 200 + train[1].sum() and model.background_kept == pytest.approx(200 / (train[1] == 0).sum())
    assert model.l2 == min(model.grid, key=lambda g: g["val_cross_entropy"])["l2"]

    W, b = model.model.weight.numpy().astype(float), model.model.bias.numpy().astype(float)

    def p_motif(seq: str, at: int) -> float:
        logit = b[MOTIF] - b[1 - MOTIF]
        for j, i in enumerate(range(at - HALF_WINDOW, at + HALF_WINDOW + 1)):
            code = OUTSIDE if not 0 <= i < len(seq) else BASES.find(seq[i].upper()) % (len(BASES) + 1)
            logit += W[j, code, MOTIF] - W[j, code, 1 - MOTIF]
        return 1 / (1 + np.exp(-logit))

    variants = [("a", 0, "T"), ("a", 105, "A"), ("b", 199, "C"), ("v", 57, "g"), ("b", 3, "N")]
    expected = [p_motif(seqs[c][:i] + alt + seqs[c][i + 1:], i) - p_motif(seqs[c], i) for c, i, alt in variants]
    variants = [(c, i, seqs[c][i], alt, "m") for c, i, alt in variants]
    assert score_snvs(model, tmp_path / "ref.fa", variants) == pytest.approx(expected, abs=1e-5)


def test_window_baseline_learns_the_simulated_motifs(tmp_path):
    """On `genoformer simulate`'s planted motifs, fitted on 6 contigs with 2 for the penalty: held-out motif-breaking
    CTCF SNVs rank well above neutral ones (chance 0.5), and fitting on 1 background base in ~6 still gives
    probabilities whose mean matches the held-out motif fraction (the case-control correction)."""
    from score_variants_quality import rank, snvs
    from window_baseline import contig_data, fit_motif_model, score_snvs

    from genoformer.simulate.genome import simulate

    names = [f"c{i}" for i in range(12)]
    example = simulate(tmp_path / "example", seed=3, contigs=[(n, 10_000) for n in names], coverage=0.1)
    model = fit_motif_model(contig_data(example.reference, example.motifs_bed, names[:6]),
                            contig_data(example.reference, example.motifs_bed, names[6:8]), l2_grid=(1e-4,),
                            max_background=10_000)
    assert model.background_kept < 0.2
    codes, in_motif = contig_data(example.reference, example.motifs_bed, names[8:])
    assert model.motif_probability(codes).mean() == pytest.approx(in_motif.mean(), rel=0.3)
    variants = snvs(example, names[8:], np.random.default_rng(0))
    diffs = score_snvs(model, example.reference, variants)
    aurocs = rank([{"id": f"{v[4]}_{i}", "diff": d} for i, (v, d) in enumerate(zip(variants, diffs))], "diff")
    assert aurocs["CTCF_core"] > 0.7 and aurocs["all motifs"] > 0.55


# --- mlm: Markov models -----------------------------------------------------------------------------------

def test_markov_bits_per_base_by_hand():
    """Fitted on AACG (one strand): add-one order 0 gives A 3/8, C 2/8, G 2/8, T 1/8; order 1 after A gives
    A 2/6, C 2/6, G 1/6, T 1/6, after C: G 2/5, others 1/5, after G (never seen): 1/4 each."""
    from markov import MarkovCounts, bits_per_base, codes

    counts = MarkovCounts.fit([codes("AACG")], 1, both_strands=False)
    bits0, n0 = bits_per_base(counts.probabilities(0, "add-one"), [codes("ACT")], skip=0)
    assert n0 == 3 and bits0 == pytest.approx(-(np.log2(3 / 8) + np.log2(2 / 8) + np.log2(1 / 8)) / 3)
    bits1, n1 = bits_per_base(counts.probabilities(1, "add-one"), [codes("ACGT")], skip=1)
    assert n1 == 3 and bits1 == pytest.approx(-(np.log2(2 / 6) + np.log2(2 / 5) + np.log2(1 / 4)) / 3)
    # interpolated, beta 2: P(C | A) = (n(A,C) + 2 P0(C)) / (n(A) + 2) = (1 + 2 * 2/8) / 4
    p = counts.probabilities(1, "interpolated, beta 2")
    assert p[0, 1] == pytest.approx(1.5 / 4) and np.allclose(p.sum(1), 1)
    assert np.allclose(p[2], (np.array([0, 0, 0, 0]) + 2 * np.array([3, 2, 2, 1]) / 8) / 2)  # G: never a context


def test_markov_counts_both_strands_and_n():
    from markov import MarkovCounts, codes

    assert MarkovCounts.fit([codes("AACG")], 0).counts[0].tolist() == [[2, 2, 2, 2]]  # + CGTT
    one = MarkovCounts.fit([codes("ACNGT")], 1, both_strands=False).counts[1]
    expected = np.zeros((4, 4), int)
    expected[0, 1] = expected[2, 3] = 1  # A->C and G->T; N breaks C->G
    assert np.array_equal(one, expected)


def test_markov_choice_prefers_the_true_order():
    """Data from an order-1 chain with strong dependence: order 1 beats order 0 on validation by a wide margin."""
    from markov import MarkovCounts, choose

    rng = np.random.default_rng(7)
    step = np.array([[0.85, 0.05, 0.05, 0.05], [0.05, 0.85, 0.05, 0.05], [0.05, 0.05, 0.85, 0.05],
                     [0.05, 0.05, 0.05, 0.85]])

    def chain(n: int) -> np.ndarray:
        out = [0]
        for _ in range(n - 1):
            out.append(rng.choice(4, p=step[out[-1]]))
        return np.array(out)

    counts = MarkovCounts.fit([chain(5000)], 2, both_strands=False)
    rows = choose(counts, [chain(2000)], orders=(0, 1, 2))
    bits = [r["val_bits"] for r in rows]
    entropy = -(0.85 * np.log2(0.85) + 3 * 0.05 * np.log2(0.05))
    assert bits[0] > 1.9 and abs(bits[1] - entropy) < 0.05 and bits[2] >= bits[1] - 0.01


@pytest.mark.parametrize("k", [1, 2])
def test_model_bits_per_base_by_hand(tmp_path, k):
    """An mlm model with a zeroed head is uniform over the 4^k A/C/G/T k-mers: 2 bits a base, every base scored
    once. With the A...A token's bias at 20, an A run costs log2(1 + (4^k - 1) e^-20) / k bits a base and a
    C run (20 / ln 2 + log2(1 + (4^k - 1) e^-20)) / k."""
    from fasta_factory import write_fasta
    from mlm_quality import masked_bits_per_base

    from genoformer.io.fasta import Reference
    from genoformer.model.config import ReformerConfig
    from genoformer.model.heads import GenoModel
    from genoformer.tokenize import KmerTokenizer

    rng = np.random.default_rng(10)
    fasta = write_fasta(tmp_path / "ref.fa", {"r": "".join(rng.choice(list("ACGT"), size=240)), "a": "A" * 96,
                                              "c": "C" * 96})
    pysam.faidx(str(fasta))
    ref = Reference(fasta)
    tok = KmerTokenizer(k)
    model = GenoModel(ReformerConfig(vocab_size=tok.vocab_size, d_model=16, depth=1, heads=2, bucket_size=8,
                                     n_hashes=1, attention="full"), tok, "mlm")
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    bits, bases = masked_bits_per_base(model, ref, "r:1-240", window=64, span=3, seed=0)
    assert bases == 240 and bits == pytest.approx(2.0, abs=1e-6)
    with torch.no_grad():
        model.head.bias[int(tok.encode("A" * k)[0])] = 20.0
    rest = np.log2(1 + (4 ** k - 1) * np.exp(-20.0))
    bits_a, _ = masked_bits_per_base(model, ref, "a", window=64, span=3, seed=0)
    bits_c, _ = masked_bits_per_base(model, ref, "c", window=64, span=3, seed=0)
    assert bits_a == pytest.approx(rest / k, abs=1e-6)
    assert bits_c == pytest.approx((20 / np.log(2) + rest) / k, rel=1e-5)


# --- pattern: GC / CpG window features --------------------------------------------------------------------

def test_gc_cpg_features_match_a_plain_loop():
    from cpg_baseline import gc_cpg_features

    rng = np.random.default_rng(8)
    seq = "".join(rng.choice(list("ACGTNcg"), size=40)).encode()
    window = 7
    got = gc_cpg_features(seq, window)
    s = seq.decode().upper()
    for i in range(len(s)):
        lo = min(max(i - window // 2, 0), len(s) - window)
        w = s[lo:lo + window]
        n = sum(b in "ACGT" for b in w)
        c, g = w.count("C"), w.count("G")
        cg = sum(w[j:j + 2] == "CG" for j in range(len(w) - 1))
        assert got[i, 0] == pytest.approx((c + g) / n if n else 0)
        assert got[i, 1] == pytest.approx(cg * n / (c * g) if c * g else 0)


def test_pattern_score_matches_rank_auroc_and_plain_average_precision():
    from cpg_baseline import score

    from genoformer.train.metrics import auroc

    rng = np.random.default_rng(9)
    probs = rng.permutation(np.arange(1, 201)) / 256  # distinct, exact in float16: no ties
    truth = rng.random(200) < 0.2
    roc, ap = score(truth, probs)
    assert roc == pytest.approx(auroc(truth, probs))
    hits = truth[np.argsort(-probs)]
    assert ap == pytest.approx(np.mean([hits[:i + 1].mean() for i in np.flatnonzero(hits)]))


# --- long range ---------------------------------------------------------------------------------------------

def test_long_range_balanced_accuracy_and_motif_scan():
    from long_range_quality import accuracy_by_distance, motif_scan

    from genoformer.simulate.long_range import PARTNERS

    pairs = [{"offset": 100, "partner": "A"}] * 3 + [{"offset": -100, "partner": "B"}] + \
        [{"offset": 500, "partner": "A"}, {"offset": 500, "partner": "B"}]
    # d 100: A right 2 of 3, B right 1 of 1 -> (2/3 + 1) / 2; d 500: no call = half right each
    assert accuracy_by_distance(pairs, ["A", "A", "B", "B", None, None]) == pytest.approx({100: 5 / 6, 500: 0.5})
    assert accuracy_by_distance(pairs, ["A"] * 6) == {100: 0.5, 500: 0.5}  # a constant caller is at chance
    seq = "T" * 10 + PARTNERS["B"] + "T" * 30 + PARTNERS["A"] + "T" * 50
    assert motif_scan(seq, 25) == "B" and motif_scan(seq, 40) == "A"  # B starts at 10, A at 52 and motif_scan("T" * 50, 10) is None


def test_long_range_training_regions_stay_before_the_held_out_pairs(tmp_path):
    from long_range_quality import read_pairs, split_pairs, training_regions

    from genoformer.simulate.long_range import simulate_long_range

    ex = simulate_long_range(tmp_path / "lr", 1, distances=(60, 300), pairs=8)
    train, test, cut = split_pairs(read_pairs(ex), 0.25)
    assert len(train) == 12 and len(test) == 4
    for p in test:
        assert min(p["site_start"], p["partner_start"]) >= cut[p["contig"]]
    lines = training_regions(train, cut, 256, tmp_path / "r.bed").read_text().splitlines()
    assert {line.split("\t")[0] for line in lines} == {"lr60"}  # a window of 256 holds partners 60 away, not 300
    for line in lines:
        contig, start, end = line.split("\t")
        assert int(end) <= cut[contig] and int(end) - int(start) >= 256


def test_long_range_results_of_separate_processes_merge_into_one_table(capsys):
    """Runs of other attentions and seeds, as JSON gives them back (distance keys as strings), join into one
    result: each model row once, the motif-scan rule once per seed and window, the means over seeds printed."""
    from long_range_quality import merge, report

    rule = {"model": "rule", "attention": "-", "window": 512, "accuracy": {"64": 1.0, "160": 1.0}}
    def run(seed, attention, acc):
        row = {"model": "genoformer pattern", "attention": attention, "window": 512, "seed": seed, "site_auroc": 0.9,
               "accuracy": {"64": acc[0], "160": acc[1]}, "rule": rule["accuracy"]}
        return {"distances": [64, 160], "pairs": 8, "test_share": 0.25, "steps": 10, "model": {"d_model": 8},
                "options": {}, "windows": [512], "attentions": [attention], "seeds": [seed], "command": "c",
                "rows": [rule | {"seed": seed}, row]}
    runs = [run(0, "lsh", (0.9, 0.8)), run(0, "local", (0.7, 0.5)), run(1, "lsh", (1.0, 0.6))]
    merged = merge(json.loads(json.dumps(runs)))
    assert merged["seeds"] == [0, 1] and merged["attentions"] == ["lsh", "local"]
    assert [(r["seed"], r["attention"]) for r in merged["rows"]] == [(0, "-"), (0, "lsh"), (0, "local"), (1, "-"),
                                                                     (1, "lsh")]
    assert merged["rows"][1]["accuracy"] == {64: 0.9, 160: 0.8} and merged["rows"][1]["rule"][160] == 1.0
    summary = report(merged)
    out = capsys.readouterr().out
    assert "mean over seeds 0, 1" in out
    lsh_mean = next(line for line in out.splitlines() if line.startswith("genoformer pattern lsh"))
    assert "0.950" in lsh_mean and "0.700" in lsh_mean and "0.600-0.800" in lsh_mean  # d 64 mean; d 160 mean, range
    assert summary  # LSH at the longest window against the rule, per seed
    with pytest.raises(SystemExit, match="steps differs"):
        merge([runs[0], runs[1] | {"steps": 20}])
    with pytest.raises(SystemExit, match="appears twice"):
        merge([runs[0], runs[0]])


@pytest.mark.parametrize("argv, message", [
    (["--extend-steps", "-5"], "--extend-steps"),
    (["--options", "[1]"], "--options"),
    (["--windows", "128,512", "--distances", "64,160"], "--windows 128: holds the partner of none"),
])
def test_long_range_refuses_bad_settings_before_training(monkeypatch, capsys, argv, message):
    import long_range_quality

    monkeypatch.setattr(sys, "argv", ["long_range_quality.py", *argv])
    with pytest.raises(SystemExit) as exit_info:
        long_range_quality.main()
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_long_range_model_calls_read_each_site_of_its_window(tmp_path):
    """A 1-step pattern model on the long-range example: the harness's calls and site AUROC equal those computed
    here by running the model on each site's window read straight from the FASTA."""
    from long_range_quality import eval_window, model_calls, read_pairs, split_pairs

    from genoformer.model.checkpoint import load_checkpoint
    from genoformer.simulate.long_range import simulate_long_range
    from genoformer.train import TrainConfig, train
    from genoformer.train.metrics import auroc

    ex = simulate_long_range(tmp_path / "lr", 2, distances=(60,), pairs=12)
    train(TrainConfig.from_dict(dict(task="pattern", reference=str(ex.reference),
                                     bed=[str(p) for p in ex.class_beds.values()], window=256, k=1, d_model=16,
                                     depth=1, heads=2, bucket_size=16, attention="full", max_steps=1, batch_size=2,
                                     progress=False, device="cpu", out=str(tmp_path / "run"))))
    _, test, _ = split_pairs(read_pairs(ex), 0.25)
    with pysam.FastaFile(str(ex.reference)) as fa:
        genome = {"lr60": fa.fetch("lr60")}
    calls, site_auroc = model_calls(tmp_path / "run", ex.reference, test, 256, {"lr60": len(genome["lr60"])}, 0)
    model, meta, _ = load_checkpoint(tmp_path / "run")
    model.eval()
    expected, scores, truth = [], [], []
    for p in test:
        start = eval_window(p, 256, len(genome["lr60"]))
        seq = genome["lr60"][start:start + 256]
        tokens = torch.from_numpy(model.tokenizer.encode(seq).astype(np.int64))[None]
        # the stem's per-base inputs: letter codes and the soft-mask bit of each base
        bases = torch.from_numpy(model.tokenizer.codes(seq).astype(np.int64))[None]
        soft = torch.tensor([[c.islower() for c in seq]])  # by hand, not tokenize.soft_mask
        with torch.no_grad():
            logits = model(tokens, torch.ones_like(tokens, dtype=torch.bool), n_bases=256, bases=bases,
                           soft_mask=soft, valid=torch.ones(1, 256, dtype=torch.bool))
            probs = torch.sigmoid(logits)[0].numpy()
        site = slice(p["site_start"] - start, p["site_end"] - start)
        a, b = probs[site, 0].mean(), probs[site, 1].mean()
        expected.append("A" if a >= b else "B")
        scores.append(probs.sum(1))
        truth.append(np.arange(256) >= site.start)
        truth[-1] &= np.arange(256) < site.stop
    assert meta["head"]["class_names"] == ["long_range_A", "long_range_B"]
    assert calls == expected
    assert site_auroc == pytest.approx(auroc(np.concatenate(truth), np.concatenate(scores)), abs=1e-6)


# --- the scripts' command lines ------------------------------------------------------------------------------

@pytest.mark.parametrize("script, argv", [
    ("variant_quality", ["--settings", "simulated", "--seeds", "0,1,2", "--k", "1", "--sim-contig-length", "50000"]),
    ("classify_quality", ["--budget", "2m", "--baseline-only"]),
    ("protein_ss_quality", ["--budget", "400", "--window", "256"]),
    ("mlm_quality", ["--k", "1", "--window", "512", "--seeds", "0,1", "--score-on", "validation"]),
    ("pattern_quality", ["--budget", "5", "--attention", "local", "--score-on", "validation"]),
    ("long_range_quality", ["--distances", "100,1000", "--windows", "256,2048", "--attentions", "lsh,local"]),
    ("attention_quality", ["--tasks", "classify", "--seeds", "0,1"]),
])
def test_script_arguments_parse(script, argv):
    module = __import__(script)
    args = module.parser().parse_args(argv)
    assert args.budget is not None and args.seeds
    with pytest.raises(SystemExit) as exit_info:
        module.parser().parse_args(["--seeds", "0,0"])  # repeated seeds are refused
    assert exit_info.value.code == 2


def test_variant_threshold_is_chosen_on_validation_unless_given():
    import variant_quality

    parse = variant_quality.parser().parse_args
    assert parse([]).threshold is None and parse(["--threshold", "validation"]).threshold is None
    assert parse(["--threshold", "0.3"]).threshold == 0.3
    for bad in ("0", "1.5", "high"):
        with pytest.raises(SystemExit):
            parse(["--threshold", bad])
    train, val, scored = (parse_region(r) for r in (variant_quality.TRAIN_REGION, variant_quality.VAL_REGION,
                                                    variant_quality.EVAL_REGION))
    assert train[1] < val[0] and scored[1] < train[0]  # validation after training, the scored region before it


def test_simulated_variant_contigs_train_validate_and_hold_out_apart():
    import variant_quality

    parse = variant_quality.parser().parse_args
    assert variant_quality.simulated_contigs(parse([])) == (["sim1"], "sim2", "sim3")
    assert variant_quality.simulated_contigs(parse(["--sim-contigs", "5"])) == (["sim1", "sim2", "sim3"], "sim4", "sim5")


def parse_region(region: str) -> tuple[int, int]:
    start, end = region.split(":")[1].replace(",", "").split("-")
    return int(start), int(end)


def test_ablation_grid_and_arguments():
    from ablation import grid_from, parse

    from genoformer.errors import UsageError

    assert grid_from("k,attention", None) == [{"k": k, "attention": a} for k in (1, 6)
                                              for a in ("lsh", "local", "full")]
    assert grid_from(None, '[{"k": 1}, {"stem": false}]') == [{"k": 1}, {"stem": False}]
    assert grid_from(None, None) == [{}]
    for vary, grid in (("nope", None), (None, "[1]"), (None, "{"), ("k", "[{}]")):
        with pytest.raises(UsageError):
            grid_from(vary, grid)
    args = parse(["--benchmark", "variant", "--vary", "attention", "--window", "1024", "--budget", "3"])
    assert args.seeds == [0, 1, 2] and args.window == 1024 and len(args.grid_rows) == 3
    with pytest.raises(SystemExit):
        parse(["--benchmark", "nope"])


def test_merge_seeds_joins_runs_and_recomputes_the_spread():
    from merge_seeds import merge

    def result(seed: int, model: float, base: float) -> dict:
        run = {"metric": "AUPRC", "genoformer": model, "baselines": {"LR": base, "majority": 0.1},
               "higher_is_better": True, "detail": {"seed": seed}, "also": []}
        return {"benchmark": "ablation_pattern", "steps": 400, "baseline": "LR", "seeds": [seed], "machine": {},
                "command": f"seed {seed}", "results": [{"options": {"k": 6}, "runs": [run]}]}

    merged = merge([result(0, 0.5, 0.4), result(1, 0.3, 0.45), result(2, 0.7, 0.5)])
    assert merged["seeds"] == [0, 1, 2] and len(merged["results"][0]["runs"]) == 3
    (row,) = merged["rows"]
    assert row["options"] == "k=6" and row["seeds"] == 3
    assert (row["mean"], row["min"], row["max"]) == pytest.approx((0.5, 0.3, 0.7))
    assert row["baseline"] == pytest.approx(0.45)
    assert (row["diff"], row["diff_min"], row["diff_max"]) == pytest.approx((0.05, -0.15, 0.2))
    twice, other_steps = result(0, 0.3, 0.45), result(1, 0.3, 0.45) | {"steps": 5}
    for bad in ([result(0, 0.5, 0.4), twice], [result(0, 0.5, 0.4), other_steps]):
        with pytest.raises(SystemExit):
            merge(bad)
