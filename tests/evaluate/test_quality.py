"""QUAL and GQ against the truth (evaluate.quality) and the calibration that export applies
(predict.calibration): reliability bands and precision-recall counted by hand on a hand-made VCF;
the calibration fit recovers a known temperature and class shift; export --calibration calls from
calibrated probabilities; bad calibration files fail cleanly."""
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
    # QUAL: the 10 false positives (5-14) rank below every true call (30-59); deciles of 4 calls
    assert [d["precision"] for d in result.quality.deciles] == [0.0, 0.0, 0.5] + [1.0] * 7
    pr = (tmp_path / "q.pr.tsv").read_text().splitlines()
    assert pr[0] == "qual\tcalls\tprecision\trecall" and len(pr) == 41
    last = pr[-1].split("\t")
    assert (int(last[1]), float(last[2]), float(last[3])) == (40, 0.75, 0.75)
    assert (tmp_path / "q.reliability.tsv").read_text().startswith("band\tcalls\twrong")
    assert "GQ calibration error" in result.table()


def test_calibration_recovers_a_known_distortion():
    rng = np.random.default_rng(0)
    n, classes = 60_000, 7
    true_logits = rng.normal(0, 2, size=(n, classes))
    true_logits[:, 0] += 4  # mostly hom_ref
    p = np.exp(true_logits - true_logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    # the model: twice as sharp as the truth and every variant class up-weighted by e^1.5
    shift = np.array([0] + [1.5] * 6)
    model_logits = 2 * np.log(p) + shift
    model = np.exp(model_logits - model_logits.max(1, keepdims=True))
    model /= model.sum(1, keepdims=True)
    calibration = fit(model, labels)
    assert calibration.temperature == pytest.approx(2.0, rel=0.05)
    assert np.allclose(calibration.offsets[1:], -1.5 / 2, atol=0.1)
    assert calibration.fitted_on["nll_after"] < calibration.fitted_on["nll_before"]
    np.testing.assert_allclose(calibration.apply(model), p, atol=0.03)


def test_export_applies_the_calibration_and_bad_files_fail(tmp_path):
    from evaluate.test_export_evaluate import _three_contig_file

    _three_contig_file(tmp_path)
    calibration = Calibration(2.0, [0.0, -1.0, -1.0, -1.0, -1.0, -1.0, -1.0])
    calibration.save(tmp_path / "cal.json")
    proc = run_cli("export", tmp_path / "p.h5", "--vcf", tmp_path / "c.vcf", "--calibration", tmp_path / "cal.json",
                   "--no-progress")
    assert proc.returncode == 0, proc.stderr
    # by hand: softmax(log(p) / 2 + offsets) of the planted base's float16 probabilities
    p = np.array([0.1, 0.7, 0.1, 0.05, 0.0, 0.05, 0.0], np.float16).astype(np.float64)
    logits = np.log(np.maximum(p, 1e-7)) / 2 + np.array(calibration.offsets)
    q = np.exp(logits) / np.exp(logits).sum()
    with pysam.VariantFile(str(tmp_path / "c.vcf")) as vcf:
        records = list(vcf)
    assert len(records) == 3
    for r in records:
        assert r.qual == pytest.approx(-10 * math.log10(q[0]), abs=0.01)
        assert r.samples[0]["GQ"] == round(-10 * math.log10(1 - q[[1, 3, 5]].sum()))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": "genoformer-calibration", "temperature": -1, "offsets": [0] * 7,
                               "classes": ["hom_ref", "snv_het", "snv_hom_alt", "insertion_het",
                                           "insertion_hom_alt", "deletion_het", "deletion_hom_alt"]}))
    with pytest.raises(InputError, match="temperature"):
        Calibration.load(bad)
    proc = run_cli("export", tmp_path / "p.h5", "--vcf", tmp_path / "d.vcf", "--calibration", bad)
    assert_clean_failure(proc, 3, "bad.json", "temperature")
    assert not (tmp_path / "d.vcf").exists()


def test_calibrate_command_fits_on_held_out_predictions(tmp_path):
    """The CLI end to end on a hand-made sample: the planted sites' classes, every other base hom_ref."""
    import read_factory as rf
    from evaluate.test_export_evaluate import write_predictions
    from genoformer.io.variant_classes import VARIANT_CLASSES

    seq = rf.random_sequence(2000, seed=4).upper()
    planted = [rf.Planted("snv", 300 + 100 * i, "ACGT"[("ACGT".index(seq[300 + 100 * i]) + 1) % 4], hom=i % 2 == 0)
               for i in range(12)]
    files = rf.write_sample(tmp_path / "s", seq, planted)
    rng = np.random.default_rng(1)
    probs = rng.dirichlet([30, 1, 1, 1, 1, 1, 1], size=len(seq))  # variant classes over-called a little
    for v in planted:
        probs[v.pos] = rng.dirichlet([1, 8, 8, 1, 1, 1, 1])
    arrays = {"c": {"span": (0, len(seq)), "covered": np.ones(len(seq), bool), "probs": probs}}
    write_predictions(tmp_path / "p.h5", {"c": len(seq)}, arrays,
                      task="variant", classes=list(VARIANT_CLASSES), reference=str(files["reference"]))
    proc = run_cli("calibrate", tmp_path / "p.h5", "--truth-vcf", files["vcf"], "--out", tmp_path / "cal.json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["bases"] == len(seq) and summary["nll_after"] < summary["nll_before"]
    assert Calibration.load(tmp_path / "cal.json").temperature == pytest.approx(summary["temperature"])
    proc = run_cli("calibrate", tmp_path / "p.h5", "--truth-vcf", files["vcf"], "--out", tmp_path / "cal.json")
    assert_clean_failure(proc, 4, "cal.json")  # exists: not replaced without --force
