"""Shared fixtures.  Real data lives in ../shared/data beside the checkout and is never copied here."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

# tiny models: OpenMP threads mostly wait for each other (and a shared 2-core box makes them spin);
# set before torch is imported here or in the CLI subprocesses the tests start
os.environ.setdefault("OMP_NUM_THREADS", "1")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CHR20 = SHARED_DATA / "variant_chr20_na12878"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (../shared/data beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def chr20(shared_data) -> dict[str, Path]:
    """The DeepVariant NA12878 chr20:10.0-10.1 Mb set: reference, reads, GIAB truth, confident BED."""
    return {
        "fasta": CHR20 / "ucsc.hg19.chr20.unittest.fasta.gz",
        "bam": CHR20 / "NA12878_S1.chr20.10_10p1mb.bam",
        "vcf": CHR20 / "test_nist.b37_chr20_100kbp_at_10mb.vcf.gz",
        "bed": CHR20 / "test_nist.b37_chr20_100kbp_at_10mb.bed",
    }


def _train_tiny(out: Path, **kw) -> Path:
    from genoformer.train import TrainConfig, train

    config = dict(window=1536, k=6, d_model=32, depth=2, heads=2, bucket_size=16, n_hashes=2, lr=3e-3,
                  warmup_steps=2, batch_size=2, max_steps=6, val_every=1000, ckpt_every=1000,
                  progress=False, device="cpu", out=str(out)) | kw
    train(TrainConfig.from_dict(config))
    return out


@pytest.fixture(scope="session")
def tiny_variant_model(chr20, tmp_path_factory) -> Path:
    """A run folder: a tiny LSH `variant` model (k=6, window 1,536) trained a few steps on chr20 reads."""
    return _train_tiny(tmp_path_factory.mktemp("models") / "variant", task="variant",
                       reference=str(chr20["fasta"]), bam=str(chr20["bam"]), truth_vcf=str(chr20["vcf"]),
                       confident_bed=str(chr20["bed"]), train_regions=["chr20:10,010,001-10,100,000"],
                       attention="lsh")


def _tiny_pattern(chr20) -> dict:
    return dict(task="pattern", reference=str(chr20["fasta"]), train_regions=["chr20:10,000,001-10,900,000"],
                bed=[str(SHARED_DATA / "annotations_hg19" / "cpg_islands_hg19_ucsc.txt")], attention=["local", "lsh"])


@pytest.fixture(scope="session")
def tiny_pattern_model(chr20, tmp_path_factory) -> Path:
    """A run folder: a tiny `pattern` model (UCSC CpG islands, mixed local/LSH layers, no reads).

    Not soft-masked repeats: the chr20 test reference has no lowercase base, so that class has no positive.
    """
    return _train_tiny(tmp_path_factory.mktemp("models") / "pattern", **_tiny_pattern(chr20))


@pytest.fixture(scope="session")
def tiny_local_lsh_model(chr20, tmp_path_factory) -> Path:
    """tiny_pattern_model without the per-base stem and decoder: its LSH layer hashes the k-mer embeddings."""
    return _train_tiny(tmp_path_factory.mktemp("models") / "local_lsh", **_tiny_pattern(chr20), stem=False,
                       decoder=False)
