"""QUAL and GQ against the truth (evaluate.quality) and the calibration that export applies
(predict.calibration): reliability bands and precision-recall counted by hand on a hand-made VCF;
the scale fit recovers a known over-confidence; export --calibration scales QUAL and GQ as computed
by hand; calibrate end to end on a hand-made sample; bad calibration files fail cleanly."""
from __future__ import annotations

import json
import math

import numpy as np
import pysam
import pytest

from cli.test_bad_inputs import assert_clean_failure, run_cli
from genoformer.errors import InputError
from genoformer.evaluate.variants import EvaluateConfig, evaluate
from genoformer.predict.calibration import Calibration, fit


def _vcf(path, rows, gq=True):
    header = pysam.VariantHeader()
    header.contigs.add("c", length=10_000)
    header.add_line('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">')
    if gq:
        header.add_line('##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="GQ">')
    header.add_sample("S")
    with pysam.VariantFile(str(path), "w", header=header) as out:
        for pos, alleles, gt, qual, q in rows:
            rec = out.new_record(contig="c", start=pos, alleles=alleles, qual=qual)
            rec.samples[0]["GT"] = gt
            if gq:
                rec.samples[0]["GQ"] = q
            out.write(rec)
    return path


def test_reliability_and_precision_by_hand(tmp_path):
    # truth: 40 SNVs, het; calls: 30 of them (25 het: right genotype, 5 hom: wrong) + 10 false positives
    truth_rows = [(100 * i, ("A", "C"), (0, 1), None, 0) for i in range(40)]
    calls_rows = [(100 * i, ("A", "C"), (0, 1) if i < 25 else (1, 1), 30.0 + i, 15 if i < 20 else 35)
                  for i in range(30)]
    calls_rows += [(100 * i + 50, ("A", "G"), (0, 1), 5.0 + i, 5) for i in range(10)]
    truth = _vcf(tmp_path / "truth.vcf", truth_rows, gq=False)
    calls = _vcf(tmp_path / "calls.vcf", sorted(calls_rows))
    result = evaluate(EvaluateConfig(calls=str(calls), truth_vcf=str(truth), quality_report=str(tmp_path / "q")))
    bands = {b["band"]: b for b in result.quality.reliability}
    # GQ 15: 20 calls, all right; GQ 35: 10 calls, 5 wrong (hom); GQ 5: 10 false positives
    assert (bands["10-19"]["calls"], bands["10-19"]["wrong"]) == (20, 0)
    assert (bands["30-39"]["calls"], bands["30-39"]["wrong"]) == (10, 5)
    assert (bands["0-9"]["calls"], bands["0-9"]["wrong"]) == (10, 10)
    assert bands["10-19"]["predicted_error"] == pytest.approx(10 ** -1.5)
    assert bands["10-19"]["observed_phred"] == pytest.approx(-10 * math.log10(0.5 / 20))
    # only the 10-19 band has >= 20 calls
    assert result.quality.calibration_error == pytest.approx(abs(15 - (-10 * math.log10(0.5 / 20))))
    assert result.quality.calibration_error_points == pytest.approx(100 * 10 ** -1.5)  # observed 0 of 20 wrong
    # QUAL: the 10 false positives (5-14) rank below every true call (30-59); deciles of 4 calls
    assert [d["precision"] for d in result.quality.deciles] == [0.0, 0.0, 0.5] + [1.0] * 7
    pr = (tmp_path / "q.pr.tsv").read_text().splitlines()
    assert pr[0] == "qual\tcalls\tprecision\trecall" and len(pr) == 41
    last = pr[-1].split("\t")
    assert (int(last[1]), float(last[2]), float(last[3])) == (40, 0.75, 0.75)
    assert (tmp_path / "q.reliability.tsv").read_text().startswith("band\tcalls\twrong")
    assert "GQ calibration error" in result.table()


def test_fit_is_isotonic_and_matches_the_error_rates_it_saw():
    rng = np.random.default_rng(0)
    # two kinds of calls, as false calls at low scores meet true ones above: wrong 70 % at raw 2-8, 1 % at 10-20
    low, high = rng.uniform(2, 8, 4000), rng.uniform(10, 20, 20_000)
    phred = np.concatenate([low, high])
    wrong = np.concatenate([rng.random(low.size) < 0.7, rng.random(high.size) < 0.01])
    knots = np.array(fit(phred, wrong))
    assert (np.diff(knots[:, 0]) > 0).all() and (np.diff(knots[:, 1]) >= 0).all()
    cal = Calibration(gq=knots.tolist())
    for raw, rate in ((5.0, 0.7), (15.0, 0.01)):
        assert 10 ** (-cal.gq_of(raw) / 10) == pytest.approx(rate, rel=0.15)
    # no error at all: finite, and as confident as the calls' number allows
    knots = fit(np.full(99, 30.0), np.zeros(99, bool))
    assert knots == [[30.0, pytest.approx(-10 * math.log10(0.5 / 100))]]
    # a set that is right more often at low scores than at high ones pools into one block
    assert len(fit(np.array([1.0, 2.0, 3.0, 4.0]), np.array([False, False, True, True]))) == 1


def test_export_applies_the_calibration_and_bad_files_fail(tmp_path):
    from evaluate.test_export_evaluate import _three_contig_file

    _three_contig_file(tmp_path)
    Calibration(qual=[[0.0, 0.0], [100.0, 200.0]], gq=[[0.0, 3.0], [100.0, 53.0]]).save(tmp_path / "cal.json")
    proc = run_cli("export", tmp_path / "p.h5", "--vcf", tmp_path / "c.vcf", "--calibration", tmp_path / "cal.json",
                   "--no-progress")
    assert proc.returncode == 0, proc.stderr
    # by hand, on the planted base's float16 probabilities: P(het) summed over the variant types
    p = np.array([0.1, 0.7, 0.1, 0.05, 0.0, 0.05, 0.0], np.float16).astype(np.float64)
    with pysam.VariantFile(str(tmp_path / "c.vcf")) as vcf:
        records = list(vcf)
    assert len(records) == 3
    for r in records:
        assert r.qual == pytest.approx(2.0 * -10 * math.log10(p[0]), abs=0.01)
        assert r.samples[0]["GQ"] == round(0.5 * -10 * math.log10(1 - p[[1, 3, 5]].sum()) + 3.0)
    old = tmp_path / "old.json"  # the first files: one scale per score
    old.write_text(json.dumps({"format": "genoformer-calibration", "qual_scale": 2, "gq_scale": 0.5}))
    assert Calibration.load(old).qual_of(20.0) == pytest.approx(40.0)
    assert Calibration.load(old).gq_of(20.0) == pytest.approx(10.0)
    unordered = tmp_path / "unordered.json"
    unordered.write_text(json.dumps({"format": "genoformer-calibration", "qual": [[0, 5], [10, 1]], "gq": [[0, 0]]}))
    with pytest.raises(InputError, match="qual must be a list"):
        Calibration.load(unordered)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "genoformer-calibration", "qual_scale": -1, "gq_scale": 1}))
    with pytest.raises(InputError, match="qual_scale"):
        Calibration.load(bad)
    proc = run_cli("export", tmp_path / "p.h5", "--vcf", tmp_path / "d.vcf", "--calibration", bad)
    assert_clean_failure(proc, 3, "bad.json", "qual_scale")
    assert not (tmp_path / "d.vcf").exists()


def test_calibrate_command_fits_on_held_out_calls(tmp_path):
    """The CLI end to end on a hand-made sample: every planted SNV called, plus calls where the reads show
    nothing (not written) and calls of the wrong zygosity (GQ errors)."""
    import read_factory as rf
    from evaluate.test_export_evaluate import write_predictions
    from genoformer.io.variant_classes import VARIANT_CLASSES

    seq = rf.random_sequence(3000, seed=4).upper()
    planted = [rf.Planted("snv", 300 + 100 * i, "ACGT"[("ACGT".index(seq[300 + 100 * i]) + 1) % 4], hom=i % 3 == 0)
               for i in range(24)]
    files = rf.write_sample(tmp_path / "s", seq, planted)
    probs = np.tile([0.999] + [0.001 / 6] * 6, (len(seq), 1))
    for i, v in enumerate(planted):  # confident, but one in four of the wrong zygosity
        het = v.hom == (i % 4 == 1)
        probs[v.pos] = [0.01, 0.94, 0.01, 0.01, 0.01, 0.01, 0.01] if het else [0.01, 0.01, 0.94, 0.01, 0.01, 0.01, 0.01]
    arrays = {"c": {"span": (0, len(seq)), "covered": np.ones(len(seq), bool), "probs": probs}}
    write_predictions(tmp_path / "p.h5", {"c": len(seq)}, arrays, task="variant", classes=list(VARIANT_CLASSES),
                      reference=str(files["reference"]), bam=str(files["bam"]))
    proc = run_cli("calibrate", tmp_path / "p.h5", "--truth-vcf", files["vcf"], "--out", tmp_path / "cal.json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert (summary["calls"], summary["false_positives"], summary["wrong_genotypes"], summary["truth_alleles"]) == \
        (24, 0, 6, 24)
    # P(GT) = 0.94 + 0.01 + 0.01 summed over the variant types: GQ = phred(0.04) = 14 claims 4 % wrong
    # genotypes where 25 % were: calibrated, 14 says (6 + 0.5) / 25
    loaded = Calibration.load(tmp_path / "cal.json")
    assert (summary["qual_knots"], summary["gq_knots"]) == (1, 1)
    assert 10 ** (-loaded.gq_of(14.0) / 10) == pytest.approx(6.5 / 25, rel=0.02)
    # QUAL = phred(0.01) = 20, no false positive: 0.5 in 25
    assert 10 ** (-loaded.qual_of(20.0) / 10) == pytest.approx(0.5 / 25, rel=0.02)
    proc = run_cli("calibrate", tmp_path / "p.h5", "--truth-vcf", files["vcf"], "--out", tmp_path / "cal.json")
    assert_clean_failure(proc, 4, "cal.json")  # exists: not replaced without --force
