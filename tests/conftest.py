"""Shared fixtures.  Real data lives in ../shared/data beside the checkout and is never copied here."""
from __future__ import annotations

from pathlib import Path

import pytest

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
