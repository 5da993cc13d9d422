"""The column layout of per-base read evidence (io.alignments): one name, index and unit per column.

Columns are only ever appended, so a model that reads the first n columns (n_evidence in its
checkpoint) keeps reading the same ones; `PILEUP_FEATURES` is the first release's layout.
"""
from __future__ import annotations

from enum import IntEnum


class Evidence(IntEnum):
    """Column of each feature in `Alignments.evidence` (see the module docstring)."""
    depth = 0
    A = 1
    C = 2
    G = 3
    T = 4
    deletions = 5
    insertions = 6
    mean_base_quality = 7
    mean_mapping_quality = 8
    forward_fraction = 9
    ref_fraction = 10
    alt_fraction = 11
    ref_base_quality = 12
    alt_base_quality = 13
    ref_mapping_quality = 14
    alt_mapping_quality = 15
    ref_forward_fraction = 16
    alt_forward_fraction = 17
    deletion_starts = 18
    mean_deletion_length = 19
    mean_insertion_length = 20
    soft_clips = 21


EVIDENCE_FEATURES: tuple[str, ...] = tuple(column.name for column in Evidence)
# the first release's ten columns: models saved with n_evidence = 10 read exactly these
PILEUP_FEATURES: tuple[str, ...] = EVIDENCE_FEATURES[:Evidence.forward_fraction + 1]
BASE_COLUMNS = (Evidence.A, Evidence.C, Evidence.G, Evidence.T)  # in ACGT order
# what each column measures: "depth" (reads), "count" (reads, a part of depth), "fraction" (0..1),
# "quality" (phred), "length" (bases)
EVIDENCE_UNITS: dict[str, str] = {
    "depth": "depth", "A": "count", "C": "count", "G": "count", "T": "count", "deletions": "count",
    "insertions": "count", "mean_base_quality": "quality", "mean_mapping_quality": "quality",
    "forward_fraction": "fraction", "ref_fraction": "fraction", "alt_fraction": "fraction",
    "ref_base_quality": "quality", "alt_base_quality": "quality", "ref_mapping_quality": "quality",
    "alt_mapping_quality": "quality", "ref_forward_fraction": "fraction", "alt_forward_fraction": "fraction",
    "deletion_starts": "count", "mean_deletion_length": "length", "mean_insertion_length": "length",
    "soft_clips": "count",
}
# columns that are means over some of the reads, and the column saying how many reads that is: a mean over one
# read in fifty reads as strongly as one over all fifty unless it is weighed by that share (model/stem.py)
EVIDENCE_MEAN_OVER: dict[str, str] = {
    "ref_base_quality": "ref_fraction", "ref_mapping_quality": "ref_fraction",
    "ref_forward_fraction": "ref_fraction", "alt_base_quality": "alt_fraction",
    "alt_mapping_quality": "alt_fraction", "alt_forward_fraction": "alt_fraction",
    "mean_deletion_length": "deletion_starts", "mean_insertion_length": "insertions",
}
# how a model's stem scales the columns (model/stem.py EvidenceScaling). "share": each by its unit alone (models
# saved before "weighed"). "weighed": a column of EVIDENCE_MEAN_OVER then times its reads' share of depth, so
# one stray alt read of fifty is a small input, not an alt quality as large as a heterozygous site's
EVIDENCE_SCALINGS = ("share", "weighed")
