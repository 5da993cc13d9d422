"""`genoformer score-variants`: scores against the model run by hand, antisymmetry (ALT -> REF on the genome
carrying ALT negates every score), windows at contig ends, the VCF read back by pysam and bcftools, bad input."""
from __future__ import annotations

import csv
import math
import sys
from pathlib import Path

import numpy as np
import pysam
import pytest
import torch
from pysam import bcftools

from genoformer.apply.variants import ScoreConfig, score_variants
from genoformer.model.checkpoint import load_checkpoint
from genoformer.tokenize import MASK_ID

from by_hand import model_inputs, run_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cli"))
from test_bad_inputs import assert_clean_failure, run_cli  # noqa: E402
from test_predict_sequences import sigterm_while_running  # noqa: E402

WINDOW = 256  # the pattern and mlm fixtures' training window


def genome(fasta: Path) -> dict[str, str]:
    with pysam.FastaFile(str(fasta)) as fa:
        return {name: fa.fetch(name) for name in fa.references}


def write_fasta(path: Path, seqs: dict[str, str]) -> Path:
    path.write_text("".join(f">{name}\n{seq}\n" for name, seq in seqs.items()))
    return path


def write_vcf(path: Path, seqs: dict[str, str], records, lengths: dict[str, int] | None = None) -> Path:
    lengths = lengths or {name: len(seq) for name, seq in seqs.items()}
    lines = ["##fileformat=VCFv4.2"] + [f"##contig=<ID={n},length={ln}>" for n, ln in lengths.items()]
    lines.append("#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO")
    lines += [f"{c}\t{pos}\tv{i}\t{ref}\t{alt}\t.\t.\t." for i, (c, pos, ref, alt) in enumerate(records)]
    path.write_text("\n".join(lines) + "\n")
    return path


def table(prefix: Path) -> list[dict]:
    return list(csv.DictReader(Path(f"{prefix}.tsv").open(), delimiter="\t"))


def score(model, fasta, vcf, out, **kw) -> list[dict]:
    score_variants(ScoreConfig(model=str(model), reference=str(fasta), vcf=str(vcf), out=str(out), progress=False,
                               device="cpu", **kw))
    return table(out)


def values(row: dict) -> np.ndarray:
    return np.array([float(v) for k, v in row.items() if k.startswith(("diff_", "lor_", "llr"))])


def snv(seqs, contig, pos0) -> tuple:
    ref = seqs[contig][pos0].upper()
    return contig, pos0 + 1, ref, {"A": "G", "C": "T", "G": "A", "T": "C"}[ref]


def test_snv_scores_equal_the_model_run_by_hand(pattern_model, example, tmp_path):
    seqs = genome(example.reference)
    motif = next(line.split("\t") for line in example.motifs_bed.read_text().splitlines())
    records = [snv(seqs, "chrA", 2), snv(seqs, motif[0], int(motif[1]) + 2), snv(seqs, "chrB", len(seqs["chrB"]) - 1)]
    assert motif[0] == "chrA" and int(motif[1]) > 2  # the rows come in reference order: as listed here
    rows = score(pattern_model, example.reference, write_vcf(tmp_path / "v.vcf", seqs, records), tmp_path / "s")
    model, meta, _ = load_checkpoint(pattern_model, hash_seed=0)
    model.eval()
    for (contig, pos, ref, alt), row in zip(records, rows):
        length = len(seqs[contig])
        start = min(max(pos - 1 - (WINDOW - 1) // 2, 0), length - WINDOW)  # centred, shifted inside the contig
        assert row["ref_window"] == f"{contig}:{start + 1}-{start + WINDOW}" and row["status"] == "scored"
        window = seqs[contig][start:start + WINDOW]
        at = pos - 1 - start
        window = window[:at] + ref + window[at + 1:]  # alleles are written in upper case, the flanks as they are
        changed = window[:at] + alt + window[at + 1:]
        p = run_model(model, [window, changed], WINDOW)
        logit = lambda x: np.log(x) - np.log1p(-x)  # noqa: E731
        for c, name in enumerate(meta["head"]["class_names"]):
            assert float(row[f"diff_{name}"]) == pytest.approx(p[1][at, c] - p[0][at, c], abs=2e-6)
            assert float(row[f"lor_{name}"]) == pytest.approx(logit(p[1][at, c]) - logit(p[0][at, c]), abs=2e-5)


@pytest.mark.parametrize("which", ["mlm_model", "token_mlm_model"])
def test_mlm_llr_equals_the_masked_log_likelihood_ratio_by_hand(which, request, example, tmp_path):
    """Per-base mlm (the default): the differing bases hidden (N to the stem, every token spelling one
    [MASK]), log P(ALT's letter) - log P(REF's letter) summed over them. Token-level mlm (a checkpoint without
    the decoder): the tokens covering them masked (and the bases they spell N to the stem), log P of the k-mers."""
    mlm_model = request.getfixturevalue(which)
    seqs = genome(example.reference)
    mnp_ref = seqs["chrB"][3000:3003].upper()
    records = [snv(seqs, "chrA", 1), snv(seqs, "chrA", 5000),  # in reference order, as the rows come
               ("chrA", 7001, seqs["chrA"][7000].upper(), seqs["chrA"][7000].upper() + "G"),  # an insertion
               ("chrB", 3001, mnp_ref, "".join("A" if b != "A" else "C" for b in mnp_ref)),  # an MNP
               ("chrB", 4001, seqs["chrB"][4000].upper(), "N")]  # no letter to score
    rows = score(mlm_model, example.reference, write_vcf(tmp_path / "v.vcf", seqs, records), tmp_path / "s")
    assert [r["status"] for r in rows] == ["scored", "scored", "mlm_indel", "scored", "mlm_not_acgt"]
    assert rows[2]["llr"] == rows[4]["llr"] == ""
    del records[2], rows[2]
    model, _, _ = load_checkpoint(mlm_model)
    model.eval()
    tok = model.tokenizer
    assert model.per_base_output == (which == "mlm_model") and model.stem is not None
    for (contig, pos, ref, alt), row in zip(records[:3], rows[:3]):
        start = min(max(pos - 1 - (WINDOW - len(ref)) // 2, 0), len(seqs[contig]) - WINDOW)
        at = pos - 1 - start
        window = seqs[contig][start:start + WINDOW]
        window = window[:at] + ref + window[at + len(ref):]
        changed = window[:at] + alt + window[at + len(ref):]
        differ = [at + i for i in range(len(ref)) if ref[i] != alt[i]]
        inputs = model_inputs(model, [window], WINDOW)
        covering = [t for t in range(inputs["tokens"].shape[1])
                    if any(t * tok.stride <= o < t * tok.stride + tok.k for o in differ)]
        inputs["tokens"][0, covering] = MASK_ID
        if which == "mlm_model":
            inputs["bases"][0, differ] = tok.pad_code
            with torch.no_grad():
                logp = model(**inputs)[0].log_softmax(-1)
            expect = sum(float(logp[o, "ACGT".index(changed[o])] - logp[o, "ACGT".index(window[o])]) for o in differ)
        else:
            spelled = sorted({t * tok.stride + j for t in covering for j in range(tok.k)} & set(range(WINDOW)))
            inputs["bases"][0, spelled] = tok.pad_code
            ref_ids, alt_ids = tok.encode(window), tok.encode(changed)
            with torch.no_grad():
                logp = model(**inputs)[0].log_softmax(-1)
            expect = sum(float(logp[t, alt_ids[t]] - logp[t, ref_ids[t]]) for t in covering)
        assert float(row["llr"]) == pytest.approx(expect, abs=1e-4)


def apply_variant(seqs: dict[str, str], contig: str, pos: int, ref: str, alt: str) -> dict[str, str]:
    s = seqs[contig]
    assert s[pos - 1:pos - 1 + len(ref)].upper() == ref
    return seqs | {contig: s[:pos - 1] + alt + s[pos - 1 + len(ref):]}


@pytest.mark.parametrize("options", [{}, {"aggregate": "window"}, {"rc_average": True}])
def test_alt_to_ref_negates_ref_to_alt(options, pattern_model, mlm_model, example, tmp_path):
    seqs = genome(example.reference)
    motif = next(line.split("\t") for line in example.motifs_bed.read_text().splitlines())
    a = seqs["chrA"]
    variants = [snv(seqs, motif[0], int(motif[1]) + 1),
                ("chrA", 9001, a[9000].upper(), a[9000].upper() + "TATAAAAG"),  # insertion
                ("chrA", 12001, a[12000:12006].upper(), a[12000].upper()),  # deletion of 5 bases
                snv(seqs, "chrB", 0),  # at the very start: the window is shifted, not dropped
                ("chrB", len(seqs["chrB"]) - 3, seqs["chrB"][-4:-2].upper(), seqs["chrB"][-4].upper())]  # at the end
    models = [pattern_model] + ([mlm_model] if options != {"aggregate": "window"} else [])
    for i, (contig, pos, ref, alt) in enumerate(variants):
        forward = write_vcf(tmp_path / f"f{i}.vcf", seqs, [(contig, pos, ref, alt)])
        alt_seqs = apply_variant(seqs, contig, pos, ref, alt)
        alt_fasta = write_fasta(tmp_path / f"alt{i}.fa", alt_seqs)
        backward = write_vcf(tmp_path / f"b{i}.vcf", alt_seqs, [(contig, pos, alt, ref)])
        for model in models:
            there = score(model, example.reference, forward, tmp_path / f"f{i}{model.name}", **options)[0]
            back = score(model, alt_fasta, backward, tmp_path / f"b{i}{model.name}", **options)[0]
            if there["status"] != "scored":
                assert model == mlm_model and there["status"] == back["status"] == "mlm_indel"
                continue
            assert np.abs(values(there)).max() > 0
            np.testing.assert_allclose(values(back), -values(there), atol=2e-5, err_msg=f"{model.name} {variants[i]}")


def test_vcf_output_read_back_by_pysam_and_bcftools(pattern_model, example, tmp_path):
    seqs = genome(example.reference)
    base = seqs["chrA"][6000].upper()
    records = [snv(seqs, "chrB", 500), snv(seqs, "chrA", 100), ("chrA", 4001, seqs["chrA"][4000].upper(), "<DEL>"),
               ("chrA", 6001, base, ",".join(b for b in "ACGT" if b != base))]  # three ALT alleles
    vcf = write_vcf(tmp_path / "v.vcf", seqs, records)
    proc = run_cli("score-variants", "--model", pattern_model, "--reference", example.reference, "--vcf", vcf,
                   "--out", tmp_path / "s", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    rows = table(tmp_path / "s")
    assert [(r["chrom"], r["pos"]) for r in rows][:2] == [("chrA", "101"), ("chrA", "4001")]  # reference order
    classes = load_checkpoint(pattern_model)[1]["head"]["class_names"]
    out = tmp_path / "s.vcf.gz"
    with pysam.VariantFile(str(out)) as f:
        header = f.header
        assert {f"GF_DIFF_{c}" for c in classes} <= set(header.info) and "GF_STATUS" in header.info
        assert header.info[f"GF_LOR_{classes[0]}"].number == "A" and list(header.contigs) == ["chrA", "chrB"]
        got = [(r.chrom, r.pos, a, status, r.info.get(f"GF_DIFF_{classes[0]}", (None,) * len(r.alts))[i])
               for r in f for i, (a, status) in enumerate(zip(r.alts, r.info["GF_STATUS"]))]
    assert [(c, p, a, s) for c, p, a, s, _ in got] == [(r["chrom"], int(r["pos"]), r["alt"], r["status"]) for r in rows]
    for (_, _, _, status, value), row in zip(got, rows):
        assert (value is None) == (status != "scored")
        if value is not None:
            assert value == pytest.approx(float(row[f"diff_{classes[0]}"]), rel=1e-5)
    assert len(bcftools.view("-H", str(out)).splitlines()) == len(records)  # bgzipped VCF bcftools reads
    query = bcftools.query("-r", "chrB", "-f", f"%POS\\t%INFO/GF_DIFF_{classes[0]}\\n", str(out))  # through the .tbi
    assert query.split() == ["501", rows[-1][f"diff_{classes[0]}"]]


def test_bad_inputs_get_one_line_and_the_contract_exit_code(pattern_model, classify_model, example, tmp_path):
    seqs = genome(example.reference)
    good = [snv(seqs, "chrA", 100)]
    base = ["score-variants", "--model", pattern_model, "--reference", example.reference, "--no-progress"]

    def run(vcf, *extra):
        return run_cli(*base, "--vcf", vcf, "--out", tmp_path / "o", *extra)

    other = write_vcf(tmp_path / "other.vcf", seqs, good, {"chrA": 20_500, "chrB": 10_000})
    assert_clean_failure(run(other), 3, "other.vcf", "another reference", "chrA")
    renamed = write_vcf(tmp_path / "renamed.vcf", {"1": seqs["chrA"]}, [("1", 101, good[0][2], good[0][3])])
    assert_clean_failure(run(renamed), 3, "renamed.vcf", "contig '1' not found")
    wrong = write_vcf(tmp_path / "wrong.vcf", seqs, [("chrA", 101, "ACGT".replace(good[0][2], "")[0], "T")])
    assert_clean_failure(run(wrong), 3, "wrong.vcf", "record 1", "but the reference has")
    past = write_vcf(tmp_path / "past.vcf", seqs, [("chrA", len(seqs["chrA"]) + 1, "A", "C")])
    assert_clean_failure(run(past), 3, "past.vcf", "past the end")
    proc = run_cli("score-variants", "--model", classify_model, "--reference", example.reference,
                   "--vcf", write_vcf(tmp_path / "g.vcf", seqs, good), "--out", tmp_path / "o", "--no-progress")
    assert_clean_failure(proc, 2, "classify model", "no reference window")
    assert "--window" in proc.stderr
    assert not list(tmp_path.glob("o.*")) and not list(tmp_path.glob(".o.*"))
    (tmp_path / "o.tsv").write_text("old")
    assert_clean_failure(run(write_vcf(tmp_path / "g.vcf", seqs, good)), 4, "already exists")


def test_classify_models_score_windows_of_the_given_length(classify_model, example, tmp_path):
    seqs = genome(example.reference)
    vcf = write_vcf(tmp_path / "v.vcf", seqs, [snv(seqs, "chrA", 1000), snv(seqs, "chrA", 19_990)])
    rows = score(classify_model, example.reference, vcf, tmp_path / "s", window=80)
    assert [r["ref_window"] for r in rows] == ["chrA:962-1041", "chrA:19921-20000"]
    diffs = [values(r) for r in rows]
    assert all(math.isclose(d[0], -d[1], abs_tol=1e-6) for d in diffs)  # a softmax over two classes


def test_read_based_models_are_refused(tiny_variant_model, chr20, tmp_path):
    vcf = tmp_path / "v.vcf"
    vcf.write_text("##fileformat=VCFv4.2\n#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\n")
    proc = run_cli("score-variants", "--model", tiny_variant_model, "--reference", chr20["fasta"], "--vcf", vcf,
                   "--out", tmp_path / "o")
    assert_clean_failure(proc, 2, "reads aligned reads", "no reads exist")


def test_sigterm_exits_143_at_once_and_leaves_nothing(pattern_model, example, tmp_path):
    seqs = genome(example.reference)
    vcf = write_vcf(tmp_path / "many.vcf", seqs, [snv(seqs, "chrA", p) for p in range(200, 19_800, 5)
                                                     if seqs["chrA"][p] in "ACGTacgt"])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    proc, seconds = sigterm_while_running(["score-variants", "--model", pattern_model, "--reference",
                                           example.reference, "--vcf", vcf, "--out", out_dir / "s",
                                           "--batch-size", "2", "--no-progress"], out_dir)
    assert proc.returncode == 143, proc.stderr
    assert seconds < 2.5, seconds
    assert list(out_dir.iterdir()) == []
