"""`genoformer buckets`: bucket maps in genomic coordinates, their files, pictures and bad inputs.

Truths used: pysam for sequence and BED/tabix parsing, plain numpy over the HDF5 datasets, the
angular-LSH definition (argmax over [xR; -xR]) recomputed by hand from the model's weights, and
brute-force pair counts. Tiny models: the shared chr20 fixtures, plus two trained here on a FASTA
written here (one all-LSH without reads, one full-attention).
"""
from __future__ import annotations

import csv
import itertools
import math
import re
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pysam
import pytest
import torch

from cli.test_bad_inputs import assert_clean_failure, run_cli
from fasta_factory import write_fasta
from genoformer.buckets.stats import COLUMNS, attended_pairs, sharing_enrichment
from genoformer.buckets.run import BucketsConfig, analysis_window, bucket_map, load_model, run_buckets
from genoformer.coords import Interval
from genoformer.data.datasets import WindowDataset
from genoformer.errors import UsageError
from genoformer.buckets.files import read_buckets
from genoformer.io.fasta import Reference

W, K = 1536, 6
SEGMENT = 240
A, B, C = 60, 660, 903  # starts of three copies of one segment: B in phase with A (600 bp), C not (843 bp)


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    """A FASTA with planted repeats (`rep`), random sequence (`mid`) and a contig shorter than a window."""
    rng = np.random.default_rng(7)

    def bases(n: int) -> str:
        return "".join(rng.choice(list("ACGT"), n))

    segment = bases(SEGMENT)
    rep = bases(A) + segment + bases(B - A - SEGMENT) + segment + bases(C - B - SEGMENT) + segment
    rep += "ca" * 60 + bases(3000)  # a soft-masked (CA)60 microsatellite right after C: one 6-mer, repeated
    path = tmp_path_factory.mktemp("buckets") / "synthetic.fa"
    write_fasta(path, {"rep": rep, "mid": bases(5000), "short": bases(1003)})
    return path


def _train(out, reference, attention, max_steps, stem=False):
    """Without the stem by default: layer 0 then hashes each token's own embedding, as the tests below read it."""
    from genoformer.train import TrainConfig, train

    train(TrainConfig(task="pattern", reference=str(reference), window=W, k=K,
                      model=dict(d_model=32, depth=2, heads=2, bucket_size=16, n_hashes=2, attention=attention,
                                 stem=stem, decoder=stem),
                      lr=3e-3, warmup_steps=1, batch_size=1, max_steps=max_steps, val_every=1000, ckpt_every=1000,
                      progress=False, device="cpu", out=str(out)))
    return out


@pytest.fixture(scope="module")
def lsh_model(synthetic, tmp_path_factory):
    """All-LSH, no reads: layer 0 hashes each token's own (position-free) embedding."""
    return _train(tmp_path_factory.mktemp("models") / "lsh", synthetic, "lsh", 2)


@pytest.fixture(scope="module")
def full_model(synthetic, tmp_path_factory):
    return _train(tmp_path_factory.mktemp("models") / "full", synthetic, "full", 1)


def _kmer_id(kmer: str) -> int:
    """Token id by the tokenizer's documented layout: 4 special tokens, then k-mers over ACGTN in order."""
    return 4 + sum("ACGTN".index(c) * 5 ** (K - 1 - j) for j, c in enumerate(kmer))


def _layer0_buckets(model, token_ids: np.ndarray, n_buckets: int, seed: int, extra=None) -> np.ndarray:
    """[heads, rounds, T] by the angular-LSH definition, from layer 0's weights (no reads, no positions),
    with `extra` [T, d] added to the token embeddings (the stem's)."""
    encoder = model.encoder
    block = encoder.layers.blocks[0]
    attention = block.f.fn
    heads, rounds, dh = attention.heads, attention.n_hashes, attention.dim_head
    with torch.no_grad():
        x = block.f.norm(encoder.token_emb(torch.from_numpy(token_ids)) + (0 if extra is None else extra))
        qk = (x @ attention.to_qk.weight.T).view(-1, heads, dh)  # [T, H, dh]
        rotations = torch.randn(heads, dh, rounds * (n_buckets // 2), generator=torch.Generator().manual_seed(seed))
        projected = torch.einsum("thd,hdr->htr", qk, rotations).view(heads, -1, rounds, n_buckets // 2)
        buckets = torch.cat([projected, -projected], -1).argmax(-1)  # [H, T, R]
    return buckets.transpose(1, 2).numpy()


@pytest.mark.parametrize("region, window_start, n_valid", [
    ("mid:2,001-2,500", 1482, W),        # centred on the region, mid-contig, on the 6-mer grid
    ("mid:4,801-5,000", 5000 - W, W),    # clipped at the contig end
    ("short:900-1,003", 0, 1003),        # a contig shorter than the window: padded end
])
def test_coordinates_map_back_exactly(synthetic, lsh_model, region, window_start, n_valid):
    bmap = bucket_map(lsh_model, synthetic, region, hash_seed=3)
    window = bmap.window
    assert (window.start, len(window), window.n_valid) == (window_start, W, n_valid)
    assert window.start <= bmap.region.start and bmap.region.end <= window.valid_end

    n = 1 + math.ceil((n_valid - K) / K)
    assert bmap.n_tokens == n
    np.testing.assert_array_equal(bmap.token_start, window.start + K * np.arange(n))
    np.testing.assert_array_equal(bmap.token_end, np.minimum(bmap.token_start + K, window.valid_end))
    with pysam.FastaFile(str(synthetic)) as fa:
        contig = fa.fetch(bmap.contig).upper()
    kmers = [contig[s:s + K].ljust(K, "N") for s in bmap.token_start.tolist()]  # the last k-mer padded with N
    np.testing.assert_array_equal(bmap.token_ids, [_kmer_id(km) for km in kmers])

    # layer 0 by hand: each token's bucket from its own embedding, rotations seeded with hash seed + 0
    model, _ = load_model(lsh_model, hash_seed=3)
    expected = _layer0_buckets(model, bmap.token_ids, bmap.n_buckets, seed=3)
    np.testing.assert_array_equal(bmap.buckets[bmap.layers.index(0)], expected)

    # every real base reads its own token's bucket; bases past the contig end have none
    bases = np.arange(window.start, window.valid_end)
    np.testing.assert_array_equal(bmap.bucket_at(0, 1, 1, bases), expected[1, 1, (bases - window.start) // K])
    assert (bmap.bucket_at(0, 0, 0, [window.start - 1, window.valid_end]) == -1).all()
    # attended tokens are searched for the region's tokens only, and equal those of a search over every token
    in_region = bmap.region_tokens()
    assert (bmap.top_tokens[:, :, ~in_region] == -1).all() and (bmap.top_tokens[:, :, in_region, 0] >= 0).all()
    item = WindowDataset(Reference(str(synthetic)), [window], model.tokenizer)[0]
    every = model.encoder.inspect(item["tokens"][None], item["token_mask"][None], top_k=8)
    for li, layer in enumerate(bmap.layers):
        keys, weights = every[layer].top_positions[0][:, :n], every[layer].top_weights[0][:, :n]
        np.testing.assert_array_equal(bmap.top_tokens[li][:, in_region], keys[:, in_region])
        np.testing.assert_array_equal(bmap.top_weights[li][:, in_region], weights[:, in_region])
    starts, ends, ids = bmap.runs(0, 1, 0)
    assert starts[0] == bmap.region.start and ends[-1] == bmap.region.end
    np.testing.assert_array_equal(starts[1:], ends[:-1])  # runs tile the region
    assert (ids[1:] != ids[:-1]).all()



def test_a_stem_model_hashes_its_tokens_with_the_stem_inputs(synthetic, tmp_path):
    path = _train(tmp_path / "stem", synthetic, "lsh", 1, stem=True)
    bmap = bucket_map(path, synthetic, "mid:2,001-2,500", hash_seed=3)
    window, n = bmap.window, bmap.n_tokens
    model, _ = load_model(path)
    assert model.stem is not None
    with pysam.FastaFile(str(synthetic)) as fa:
        seq = fa.fetch("mid", window.start, window.valid_end)
    bases = torch.tensor([["ACGTN".index(c) for c in seq.upper()]])
    soft = torch.tensor([[c.islower() for c in seq]])
    with torch.no_grad():
        extra = model.stem(bases, soft, valid=torch.ones_like(soft))[1][0, :n]
    expected = _layer0_buckets(model, bmap.token_ids, bmap.n_buckets, seed=3, extra=extra)
    np.testing.assert_array_equal(bmap.buckets[bmap.layers.index(0)], expected)
    plain = _layer0_buckets(model, bmap.token_ids, bmap.n_buckets, seed=3)
    assert (plain != expected).mean() > 0.1  # the stem moves tokens to other buckets

def test_planted_repeats_share_buckets(synthetic, lsh_model, tiny_local_lsh_model):
    """In-phase copies hold the same 6-mers: identical embeddings, so layer 0 hashes them identically
    (positions enter only as rotary inside attention, after hashing). Later layers mix in context,
    which is the same inside the copies, so they still share almost always. The out-of-phase copy
    holds other 6-mers and shares about as often as random sequence does."""
    inner = np.arange(A + K, A + SEGMENT - K)  # away from the copies' edges
    for model in (lsh_model, tiny_local_lsh_model):  # all-LSH, and an LSH layer after a local one
        bmap = bucket_map(model, synthetic, "rep:1-1,536")
        background = bucket_map(model, synthetic, "mid:1,001-2,536")
        random_bases = np.arange(1000, 1000 + W - (B - A))

        def share(m, bases, distance, layer):
            return np.mean([(m.bucket_at(layer, h, r, bases) == m.bucket_at(layer, h, r, bases + distance)).mean()
                            for h, r in itertools.product(m.heads, m.rounds)])

        for layer in bmap.layers:
            in_phase, out_of_phase = share(bmap, inner, B - A, layer), share(bmap, inner, C - A, layer)
            random_pairs = share(background, random_bases, B - A, layer)
            assert in_phase >= 0.9 and random_pairs <= 0.25 and in_phase >= 5 * random_pairs, (layer, in_phase,
                                                                                                random_pairs)
            assert out_of_phase <= 0.3, (layer, out_of_phase)
            if model is lsh_model and layer == 0:
                assert in_phase == 1.0


def _datasets(path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_same_seed_same_files_other_seed_other_buckets(chr20, tiny_variant_model, tmp_path):
    def run(name, seed):
        config = BucketsConfig(model=str(tiny_variant_model), reference=str(chr20["fasta"]), bam=str(chr20["bam"]),
                               region="chr20:10,000,501-10,001,500", hash_seed=seed, out=str(tmp_path / name),
                               plots=False, device="cpu")
        run_buckets(config)
        return tmp_path / name

    first, again, other = run("a", 0), run("b", 0), run("c", 1)
    for name in ("buckets.bed", "summary.tsv", "config.json"):
        if name == "config.json":
            continue  # it names the output folder
        assert (first / name).read_bytes() == (again / name).read_bytes()
    one, two, three = (_datasets(d / "buckets.h5") for d in (first, again, other))
    assert one.keys() == two.keys() == three.keys()
    for name in one:
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)
    bucket_names = [n for n in one if n.startswith("buckets/")]
    assert len(bucket_names) == 2 * 2 * 2  # layers x heads x rounds, all by default
    differ = [np.mean(one[n] != three[n]) for n in bucket_names]
    assert min(differ) > 0.3, differ
    with h5py.File(first / "buckets.h5") as f:
        assert f.attrs["complete"] and f.attrs["hash_seed"] == 0 and f.attrs["window"] == W
    read = read_buckets(first / "buckets.h5")
    assert read.hash_seed == 0 and read.model["bam"] == str(chr20["bam"].resolve())


def test_files_plots_and_summary(synthetic, lsh_model, tmp_path):
    features = tmp_path / "copies.bed"
    features.write_text("".join(f"rep\t{s}\t{s + SEGMENT}\n" for s in (A, B)))
    out = tmp_path / "out"
    written = run_buckets(BucketsConfig(model=str(lsh_model), reference=str(synthetic), region="rep:1-1,536",
                                        queries=["rep:100", "rep:1,400"], tracks=[str(features)], out=str(out),
                                        bgzip=True, top_k=5, device="cpu"))
    for paths in written.values():
        assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    pictures = written["plot"] + written["query rep:100"] + written["query rep:1400"]
    assert sorted(p.name for p in pictures) == ["buckets.png", "buckets.svg", "query_rep_100.png", "query_rep_100.svg",
                                                "query_rep_1400.png", "query_rep_1400.svg"]
    for p in pictures:
        head = p.read_bytes()[:400]
        assert head.startswith(b"\x89PNG\r\n\x1a\n") if p.suffix == ".png" else b"<svg" in head

    data = _datasets(out / "buckets.h5")
    start, owned_end = data["tokens/start"], data["tokens/owned_end"]

    # the BED, through tabix: runs named L.H.R.B, each base once per layer/head/round, ids as in the HDF5
    covered = {}
    with pysam.TabixFile(str(out / "buckets.bed.gz")) as bed:
        for rec in bed.fetch("rep", 0, W, parser=pysam.asBed()):
            m = re.fullmatch(r"L(\d+)\.H(\d+)\.R(\d+)\.B(\d+)", rec.name)
            layer, head, round_, bucket = map(int, m.groups())
            tokens = np.searchsorted(owned_end, np.arange(rec.start, rec.end), side="right")
            assert (data[f"buckets/L{layer}.H{head}.R{round_}"][tokens] == bucket).all()
            prefix = f"L{layer}.H{head}.R{round_}"
            covered[prefix] = covered.get(prefix, 0) + rec.end - rec.start
    assert covered == {f"L{la}.H{h}.R{r}": W for la, h, r in itertools.product((0, 1), (0, 1), (0, 1))}

    with open(out / "summary.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert list(rows[0]) == [*COLUMNS, "enrichment_soft_masked", "enrichment_copies"]
    assert len(rows) == 8
    for row in rows:
        ids = data[f"buckets/L{row['layer']}.H{row['head']}.R{row['round']}"]
        sizes = np.bincount(ids, minlength=int(row["n_buckets"]))
        occupied = sizes[sizes > 0]
        assert int(row["tokens"]) == len(ids) == W // K
        assert (int(row["bucket_size_min"]), float(row["bucket_size_median"]), int(row["bucket_size_max"]),
                int(row["empty_buckets"])) == (occupied.min(), np.median(occupied), occupied.max(), (sizes == 0).sum())
        rounds = np.stack([data[f"buckets/L{row['layer']}.H{row['head']}.R{r}"] for r in (0, 1)])
        pairs = attended_pairs(rounds, 16, np.arange(len(ids)))
        q, k = pairs[int(row["round"])]
        distance = np.abs(start[k] - start[q])
        assert int(row["attended_pairs"]) == len(q)
        assert float(row["share_gt_1kb"]) == pytest.approx((distance > 1000).mean(), rel=1e-5)
        assert row["share_gt_10kb"] == row["share_gt_100kb"] == "0"  # the window is 1,536 bases
        q2, k2 = pairs[1 - int(row["round"])]
        again = np.isin(q * len(ids) + k, q2 * len(ids) + k2).mean()  # as sets of pairs
        assert float(row["met_in_other_rounds"]) == pytest.approx(again, rel=1e-5)
        # the microsatellite's tokens are all ACACAC: at layer 0 they hash alike, so they share buckets with
        # each other far more than with the rest (measured 5.7-17); layer 1 mixes in context (3.5-12).
        # The copies' bases only pair up copy to copy, so their enrichment stays near 1 (0.9-1.3)
        assert float(row["enrichment_soft_masked"]) > (5 if row["layer"] == "0" else 2)
        assert 0.5 < float(row["enrichment_copies"]) < 3

    # every top attended token of the model's own pass is among the pairs the summary counts
    for layer, head in itertools.product((0, 1), (0, 1)):
        top = data[f"attention/L{layer}.H{head}/tokens"]
        pairs = set()
        rounds = np.stack([data[f"buckets/L{layer}.H{head}.R{r}"] for r in (0, 1)])
        for q, k in attended_pairs(rounds, 16, np.arange(len(top))):
            pairs |= set(zip(q.tolist(), k.tolist()))
        found = {(i, j) for i, row in enumerate(top.tolist()) for j in row if j >= 0 and j != i}
        assert found and found <= pairs


def test_sharing_enrichment_matches_brute_force():
    rng = np.random.default_rng(1)
    buckets = rng.integers(0, 4, 30)
    inside = rng.integers(0, 7, 30).astype(float)
    outside = 6 - inside
    base_bucket = np.repeat(buckets, 6)
    base_token = np.repeat(np.arange(30), 6)
    base_in = np.concatenate([[True] * int(i) + [False] * (6 - int(i)) for i in inside])
    i, j = np.meshgrid(np.arange(180), np.arange(180), indexing="ij")
    other_token = base_token[i] != base_token[j]
    shared = base_bucket[i] == base_bucket[j]
    ii = other_token & base_in[i] & base_in[j]
    io = other_token & base_in[i] & ~base_in[j]
    expected = shared[ii].mean() / shared[io].mean()
    assert sharing_enrichment(buckets, inside, outside) == pytest.approx(expected)


def test_region_window_rules():
    with pytest.raises(UsageError, match="1,536"):
        analysis_window(Interval("c", 0, 1537), 1536, 10_000, 6)
    w = analysis_window(Interval("c", 1000, 1100), 600, 10_000, 6)
    assert (w.start, w.end, w.n_valid) == (750, 1350, 600)
    w = analysis_window(Interval("c", 1003, 1103), 600, 10_000, 6)  # centred at 753, moved down to the grid
    assert (w.start, w.end) == (750, 1350)
    w = analysis_window(Interval("c", 1, 600), 600, 10_000, 6)  # the grid would cut the region: kept as is
    assert (w.start, w.end) == (0, 600)
    w = analysis_window(Interval("c", 9_990, 10_000), 600, 10_000, 6)  # clipped at the contig end
    assert (w.start, w.end, w.n_valid) == (9_400, 10_000, 600)


def test_reads_only_for_models_that_fuse_them(chr20, tiny_variant_model, lsh_model, synthetic):
    with pytest.raises(UsageError, match="fuses read evidence"):
        bucket_map(tiny_variant_model, chr20["fasta"], "chr20:10,000,001-10,001,000")
    with pytest.raises(UsageError, match="trained without reads"):
        bucket_map(lsh_model, synthetic, "mid:1-1,000", bam=chr20["bam"])


def test_cli_prints_each_file(synthetic, lsh_model, tmp_path):
    proc = run_cli("buckets", "--model", lsh_model, "--reference", synthetic, "--region", "short:1-1,003",
                   "--layer", "1", "--head", "0", "--round", "1", "--out", tmp_path / "o", "--no-plots")
    assert proc.returncode == 0, proc.stderr
    listed = dict(line.split("\t") for line in proc.stdout.splitlines())
    assert set(listed) == {"h5", "bed", "summary", "config"}
    assert all(Path(path).parent == tmp_path / "o" and Path(path).is_file() for path in listed.values())
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert names == ["buckets.bed", "buckets.h5", "config.json", "summary.tsv"]
    with h5py.File(tmp_path / "o" / "buckets.h5") as f:
        assert sorted(f["buckets"]) == ["L1.H0.R1"]
    again = run_cli("buckets", "--model", lsh_model, "--reference", synthetic, "--region", "short:1-1,003",
                    "--out", tmp_path / "o")
    assert_clean_failure(again, 4, "already holds")


@pytest.mark.parametrize("extra, code, needle", [
    (["--region", "mid:1-5,001"], 3, r"past the end of mid|5,000"),
    (["--layer", "2"], 2, r"layer 2 is out of range: the model has 2 layers"),
])
def test_cli_bad_selection(synthetic, lsh_model, tmp_path, extra, code, needle):
    region = [] if "--region" in extra else ["--region", "mid:1-1,000"]
    proc = run_cli("buckets", "--model", lsh_model, "--reference", synthetic, *region, *extra,
                   "--out", tmp_path / "o", "--no-plots")
    assert_clean_failure(proc, code, needle)


@pytest.mark.parametrize("options, needle", [
    ({"heads": [2]}, r"head 2 is out of range: the model has 2 heads \(0-1, 0-based\)"),
    ({"rounds": [0, 5]}, r"round 5 is out of range: the model has 2 rounds"),
    ({"layers": [-1]}, r"layer -1 is out of range"),
    ({"queries": ["mid:1,001"]}, r"query mid:1,001 is outside the region mid:1-1000"),
    ({"queries": ["mid:10-20"]}, r"give one base"),
    ({"top_k": 0}, r"top-k must be an integer >= 1"),
])
def test_bad_selection(synthetic, lsh_model, tmp_path, options, needle):
    config = BucketsConfig(model=str(lsh_model), reference=str(synthetic), region="mid:1-1,000",
                           out=str(tmp_path / "o"), plots=False, device="cpu", **options)
    with pytest.raises(UsageError, match=needle):
        run_buckets(config)
    assert not list((tmp_path / "o").iterdir())  # nothing written


def test_cli_without_matplotlib(synthetic, lsh_model, tmp_path):
    """matplotlib made unimportable in a real process: exit 4 before any work, naming the extra."""
    code = ("import sys; sys.modules['matplotlib'] = None; from genoformer.cli import main; "
            f"main(['buckets', '--model', {str(lsh_model)!r}, '--reference', {str(synthetic)!r}, "
            f"'--region', 'mid:1-1000', '--out', {str(tmp_path / 'o')!r}])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert_clean_failure(proc, 4, "matplotlib")
    assert "genoformer[plot]" in proc.stderr and not (tmp_path / "o").exists()


def test_cli_model_without_lsh_layers(synthetic, full_model, tmp_path):
    proc = run_cli("buckets", "--model", full_model, "--reference", synthetic, "--region", "mid:1-1,000",
                   "--out", tmp_path / "o")
    assert_clean_failure(proc, 3, "no LSH layers")


def test_local_layer_is_not_lsh(synthetic, tiny_pattern_model):
    with pytest.raises(UsageError, match="layer 0 is not an LSH layer; the model's LSH layers are 1"):
        bucket_map(tiny_pattern_model, synthetic, "mid:1-1,000", layers=[0])


def test_a_region_longer_than_a_window_is_cut_into_windows_drawn_side_by_side(synthetic, lsh_model, tmp_path):
    out = tmp_path / "out"
    written = run_buckets(BucketsConfig(model=str(lsh_model), reference=str(synthetic), region="mid:1-5,000",
                                        queries=["mid:3,500"], out=str(out), device="cpu"))
    pieces = [(0, 1536), (1536, 3072), (3072, 4608), (4608, 5000)]  # windows of the model's 1,536 bases
    assert sorted(p.name for p in out.glob("window_*")) == [f"window_{i}" for i in range(1, 5)]
    net = load_model(lsh_model, "cpu", 0)
    for i, (start, end) in enumerate(pieces, start=1):
        got = read_buckets(out / f"window_{i}" / "buckets.h5")
        alone = bucket_map(lsh_model, synthetic, Interval("mid", start, end), model=net)
        assert (got.region.start, got.region.end) == (start, end)
        np.testing.assert_array_equal(got.buckets, alone.buckets)  # each window's buckets are its own
        assert (out / f"window_{i}" / "summary.tsv").is_file() and (out / f"window_{i}" / "buckets.bed").is_file()
    # the picture names what it draws (matplotlib's SVG keeps each text as a comment beside its glyphs)
    svg = (out / "buckets.svg").read_text()
    for text in ("4 model windows", "window 2", "window 4", "bucket id", "GC", "repeats (soft-masked)"):
        assert text in svg, text
    query_svg = (out / "query_mid_3500.svg").read_text()
    assert "GC" in query_svg and "repeats (soft-masked)" in query_svg and "arc colour: head" in query_svg
    assert {p.name for p in written["plot"]} == {"buckets.png", "buckets.svg"}
    again = run_cli("buckets", "--model", lsh_model, "--reference", synthetic, "--region", "mid:1-5,000",
                    "--out", out)
    assert_clean_failure(again, 4, "already holds buckets outputs")
