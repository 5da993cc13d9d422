"""gVCF (`genoformer export --gvcf`): the VCF's records plus reference-confidence blocks, as DeepVariant
and GATK write them, so samples can be merged (`bcftools merge --gvcf`) and genotyped jointly.

- Every covered base that no record's REF covers is in exactly one reference block: a record with
  REF the block's first base, ALT `<*>`, INFO/END its last base, GT 0/0, GQ the lowest reference
  GQ of its bases (phred(1 - P(hom_ref)), capped at 99), MIN_DP the lowest read depth, PL from the
  probabilities of the base with that GQ. A block holds consecutive covered bases whose GQ falls
  in one band of GQ_BIN (DeepVariant's default: 5), so a block never claims more than its worst base.
- Variant records are the VCF's, with `<*>` appended to the ALTs (AD 0 for it) and PL over every
  genotype of those alleles: P(0/0) = P(hom_ref); a biallelic call gives P(0/1) the het classes and
  P(1/1) the hom_alt classes; a 1/2 call gives P(1/2) the hom_alt classes and P(0/1), P(0/2) half the
  het classes each; every other genotype (and any with `<*>`) gets MIN_P.
"""
from __future__ import annotations

import numpy as np

from genoformer.coords import Interval
from genoformer.io.predictions import Predictions
from genoformer.io.variant_classes import HET_CLASSES, HOM_CLASSES, HOM_REF
from genoformer.predict.calls import Record
from genoformer.predict.export_config import MAX_GQ, MIN_P, genotype_quality, phred

NON_REF = "<*>"
GQ_BIN = 5


def add_gvcf_header(header) -> None:
    header.add_line('##ALT=<ID=*,Description="Any allele not named in the record (reference blocks: '
                    'any non-reference allele)">')
    header.add_line('##INFO=<ID=END,Number=1,Type=Integer,Description="Last base of the reference block">')
    header.add_line('##FORMAT=<ID=MIN_DP,Number=1,Type=Integer,Description="Lowest read depth in the block">')
    header.add_line('##FORMAT=<ID=PL,Number=G,Type=Integer,Description="Phred-scaled genotype probabilities '
                    'of the model, the best 0">')


def pls(probabilities: list[float]) -> tuple[int, ...]:
    """PL: phred of each genotype's probability over the best one's, rounded."""
    p = np.maximum(np.asarray(probabilities, dtype=np.float64), MIN_P)
    return tuple(int(x) for x in np.rint(phred(p / p.max())))


def variant_pls(rec: Record) -> tuple[int, ...]:
    """PL of a variant record's alleles plus <*> (see the module docstring), in VCF genotype order."""
    n = len(rec.alleles) + 1
    het, hom = float(rec.probs[HET_CLASSES].sum()), float(rec.probs[HOM_CLASSES].sum())
    if n == 3:
        given = {(0, 0): rec.p_hom_ref, (0, 1): het, (1, 1): hom}
    else:
        given = {(0, 0): rec.p_hom_ref, (0, 1): het / 2, (0, 2): het / 2, (1, 2): hom}
    return pls([given.get((i, j), MIN_P) for j in range(n) for i in range(j + 1)])


class GvcfSink:
    """Takes each block's per-base reference GQ and depth, then the records in order; writes records and
    reference blocks interleaved, every covered base once."""

    def __init__(self, out, write, reference, calibrated_gq=None):
        self.out, self.write, self.reference, self.calibrated_gq = out, write, reference, calibrated_gq
        self.contig: str | None = None
        self.origin = 0  # contig position of the arrays' first row
        self.next = 0  # first base not yet written (by a block or a record)
        self.covered = np.zeros(0, bool)
        self.gq = np.zeros(0, np.int64)
        self.depth = np.zeros(0, np.int64)
        self.probs = np.zeros((0, 7), np.float32)
        self.blocks = 0

    def add_bases(self, iv: Interval, p: Predictions) -> None:
        if iv.contig != self.contig:
            self.contig, self.origin, self.next = iv.contig, iv.start, iv.start
            self.covered, self.gq = np.zeros(0, bool), np.zeros(0, np.int64)
            self.depth, self.probs = np.zeros(0, np.int64), np.zeros((0, p.probs.shape[1]), np.float32)
        gap = iv.start - (self.origin + len(self.covered))  # uncovered bases between two pieces
        depth = p.depth if p.depth is not None else np.zeros(len(p.covered))
        self.covered = np.concatenate([self.covered, np.zeros(gap, bool), p.covered])
        gq = genotype_quality(p.probs[:, HOM_REF], self.calibrated_gq)
        self.gq = np.concatenate([self.gq, np.zeros(gap, np.int64), gq])
        self.depth = np.concatenate([self.depth, np.zeros(gap, np.int64), depth.astype(np.int64)])
        self.probs = np.concatenate([self.probs, np.zeros((gap, p.probs.shape[1]), np.float32), p.probs])

    def emit(self, contig: str, records: list[Record], before: int | None) -> None:
        end = self.origin + len(self.covered) if before is None else min(before, self.origin + len(self.covered))
        for rec in records:
            self._blocks(min(rec.pos, end))
            self.write(rec, non_ref=True)
            self.next = max(self.next, rec.pos + len(rec.alleles[0]))
        self._blocks(end)
        drop = max(self.next - self.origin, 0)
        if drop:  # rows already written are not needed again
            self.origin += drop
            self.covered, self.gq = self.covered[drop:], self.gq[drop:]
            self.depth, self.probs = self.depth[drop:], self.probs[drop:]

    def _blocks(self, end: int) -> None:
        """Reference blocks over the covered bases of [self.next, end)."""
        a, b = self.next - self.origin, end - self.origin
        if b <= a:
            return
        band = np.minimum(self.gq[a:b], MAX_GQ) // GQ_BIN
        covered = self.covered[a:b]
        change = np.r_[True, (band[1:] != band[:-1]) | (covered[1:] != covered[:-1])]
        starts = np.flatnonzero(change)
        for s, e in zip(starts, np.r_[starts[1:], b - a]):
            if covered[s]:
                self._block(a + s, a + e)
        self.next = end

    def _block(self, a: int, b: int) -> None:
        """One reference block over rows [a, b)."""
        start = self.origin + a
        worst = a + int(np.argmin(self.gq[a:b]))
        base = self.reference.fetch(self.contig, start, start + 1).tobytes().decode().upper()
        # pysam writes INFO/END from `stop`
        rec = self.out.new_record(contig=self.contig, start=start, stop=self.origin + b, alleles=(base, NON_REF))
        sample = rec.samples[0]
        sample["GT"] = (0, 0)
        sample["GQ"] = int(self.gq[worst])
        sample["MIN_DP"] = int(self.depth[a:b].min())
        p = self.probs[worst]
        sample["PL"] = pls([p[0], p[HET_CLASSES].sum(), p[HOM_CLASSES].sum()])
        self.out.write(rec)
        self.blocks += 1

