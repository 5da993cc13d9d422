"""Per-base read evidence from a BAM/CRAM: counts and means over the reads covering each base.

`Alignments.evidence(contig, start, end)` returns float32 [L, len(EVIDENCE_FEATURES)], one column
per `Evidence` member (index them by name: `ev[:, Evidence.depth]`). Columns are only ever
appended, so a model that reads the first n columns keeps reading the same ones.

- depth: passing reads whose alignment covers the base with M/=/X or D (deletions count,
  reference skips N do not). No base-quality filter. Equals `samtools depth -a -J -Q <min MAPQ>`
  and the number of non-refskip pileup reads of `pysam pileup(stepper="nofilter")`.
- A, C, G, T: aligned bases with base quality >= min_base_quality, like
  `count_coverage(quality_threshold=min_base_quality)`; N and other codes are not counted.
- deletions: reads with a D at the base (their share of depth).
- insertions: reads with an I starting right after the base, i.e. the base ends an M/=/X or D
  run of the read (exactly pileup's `indel > 0`). A read's leading insertion has no base and is
  not counted.
- mean_base_quality: mean over the bases counted in A+C+G+T (0 where none).
- mean_mapping_quality, forward_fraction: over the reads counted in depth (0 where depth is 0).

Against the reference base (upper-cased; N, IUPAC codes, and every base when `Alignments` was
given contig lengths rather than a `Reference`, count as N: no read supports an N):
- ref_fraction, alt_fraction: the reference base's count and the best alt's count (the most
  counted other base of A/C/G/T, the first in ACGT order on a tie) over depth.
- ref_/alt_base_quality, ref_/alt_mapping_quality, ref_/alt_forward_fraction: mean base
  quality, mean MAPQ and forward-strand share of the reads counted for the reference base and
  for the best alt (0 where that count is 0).
Indels and clips, at their anchor base (the base before them, as VCF anchors them):
- deletion_starts: reads whose D starts right after the base (pileup's `indel < 0`; same rule
  as insertions), mean_deletion_length their mean deleted length (0 where none).
- mean_insertion_length: mean inserted length of the reads counted in insertions (0 where none).
- soft_clips: reads soft-clipped at the base: a leading clip (after any hard clip) at the
  read's first aligned base, a trailing clip at its last.

Values are raw; scaling is the model's job (`EVIDENCE_UNITS` says what each column measures).
Overlapping mates both count (no overlap removal), as in count_coverage and
`pileup(ignore_overlaps=False)`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pysam

from genoformer.coords import Interval, check_interval, close_names
from genoformer.errors import AlignmentError, UsageError
from genoformer.io.alignment_checks import check_cram_reference, check_index, check_sorted_start, find_index
from genoformer.io.evidence import BASE_COLUMNS, EVIDENCE_FEATURES, Evidence
from genoformer.io.sources import LazyHandle

__all__ = ["Alignments", "ReadFilters", "Evidence", "EVIDENCE_FEATURES", "check_contigs"]

if TYPE_CHECKING:
    from genoformer.io.fasta import Reference


# SAM flag bits
UNMAPPED, SECONDARY, QCFAIL, DUPLICATE, SUPPLEMENTARY = 0x4, 0x100, 0x200, 0x400, 0x800

# CIGAR op codes (pysam/htslib): M I D N S H P = X
_I, _D, _S, _H = 1, 2, 4, 5
_CONSUMES_REF = np.array([1, 0, 1, 1, 0, 0, 0, 1, 1, 0], dtype=np.int64)
_CONSUMES_QUERY = np.array([1, 1, 0, 0, 1, 0, 0, 1, 1, 0], dtype=np.int64)
_ALIGNED = np.array([1, 0, 0, 0, 0, 0, 0, 1, 1, 0], dtype=bool)          # M = X
_COVERS = np.array([1, 0, 1, 0, 0, 0, 0, 1, 1, 0], dtype=bool)           # M D = X

_BASE_CODE = np.full(256, 4, dtype=np.int64)
_BASE_CODE[np.frombuffer(b"ACGT", dtype=np.uint8)] = np.arange(4)

# Flush the per-read buffers every this many query bases to bound memory on long reads,
# and split long regions so the float64 accumulators (~200 bytes/base) stay small.
_BATCH_BASES = 2_000_000
_MAX_REGION = 1_000_000


@dataclass(frozen=True)
class ReadFilters:
    """Which reads and bases count.

    The defaults are samtools'/pysam's: `samtools mpileup`, `samtools depth` and pysam's
    `count_coverage(read_callback="all")` drop UNMAP|SECONDARY|QCFAIL|DUP (0x704) and keep
    supplementary alignments; `keep_supplementary=False` drops them too (DeepVariant's default).
    A read counts when it has none of the excluded flags and MAPQ >= min_mapping_quality;
    one of its bases counts in A/C/G/T when its quality >= min_base_quality (mpileup -Q 13).
    """
    min_mapping_quality: int = 0
    min_base_quality: int = 13
    exclude_flags: int = UNMAPPED | SECONDARY | QCFAIL | DUPLICATE
    keep_supplementary: bool = True

    def __post_init__(self) -> None:
        for name in ("min_mapping_quality", "min_base_quality", "exclude_flags"):
            if getattr(self, name) < 0:
                raise UsageError(f"read filter {name} must be >= 0, got {getattr(self, name)}")

    @property
    def flag_mask(self) -> int:
        return self.exclude_flags | (0 if self.keep_supplementary else SUPPLEMENTARY)


def check_contigs(bam_contigs: Mapping[str, int], bam_name: str,
                  ref_contigs: Mapping[str, int], ref_name: str) -> None:
    """Every reference contig must be in the BAM header with the same length.

    Extra BAM contigs are fine (the chr20 test BAM lists all of hg19 while its FASTA holds
    chr20 only); regions are checked against the reference, so reads on them are never asked for.
    This is DeepVariant's contig-coverage idea made strict: any shortfall is an error.
    """
    problems = []
    for name, length in ref_contigs.items():
        if name not in bam_contigs:
            close = close_names(name, bam_contigs, n=1)
            problems.append(f"{name} missing from the BAM" + (f" (BAM has {', '.join(close)})" if close else ""))
        elif bam_contigs[name] != length:
            problems.append(f"{name} is {length:,} bp in the reference but {bam_contigs[name]:,} bp in the BAM")
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise AlignmentError(
            f"{bam_name} does not match reference {ref_name}: {shown}",
            hint="align the reads to this reference, or pass the FASTA the BAM was aligned to")


def _sniff(path: Path) -> bytes:
    if not path.is_file():
        raise AlignmentError(f"{path}: no such file")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        raise AlignmentError(f"{path}: empty file (0 bytes), expected a BAM or CRAM")
    if head[:1] == b">":
        raise AlignmentError(f"{path}: looks like a FASTA file, expected a BAM or CRAM")
    return head


class Alignments(LazyHandle):
    """Read evidence from an indexed, coordinate-sorted BAM or CRAM.

    The file is opened once here to check it (index, EOF, header, contigs against `reference`)
    and again lazily in any other process, so each DataLoader worker has its own handle.
    `reference` is a `Reference` (its `.contigs` are checked, its `.path` decodes CRAM) or a
    plain contig -> length mapping. As a per-base source (genoformer.io.sources), `per_base` is
    `evidence` and a padding base has no reads (0).
    """
    pad_value = 0.0

    def __init__(self, path: str | os.PathLike, reference: Reference | Mapping[str, int] | None = None,
                 filters: ReadFilters = ReadFilters()):
        self.path = Path(path)
        self.filters = filters
        self._reference_path = getattr(reference, "path", None)
        # the reference bases that ref/alt columns compare against (None: every base counts as N)
        self._reference = reference if hasattr(reference, "fetch") else None
        bam = self._open()
        self.contigs: dict[str, int] = dict(zip(bam.references, bam.lengths))
        self.reference_contigs: dict[str, int] | None = None
        if reference is not None:
            ref_contigs = dict(getattr(reference, "contigs", reference))
            check_contigs(self.contigs, str(self.path), ref_contigs,
                          str(self._reference_path or "(contig lengths given)"))
            self.reference_contigs = ref_contigs
        self._check_file(reference)

    def _check_file(self, reference) -> None:
        """What htslib only warns about or misreports as corruption (genoformer.io.alignment_checks):
        read order, the index, a CRAM's reference. Once, in the process that opens the file."""
        first = self._new_handle()  # a handle of its own: the checks read from the file's start
        try:
            if first.is_cram and hasattr(reference, "fetch"):  # before any read is decoded against it
                check_cram_reference(first, self.path, reference)
            check_sorted_start(first, self.path)
            index = find_index(self.path, first.is_cram)
            if index is not None:
                check_index(self.path, index)
        finally:
            first.close()

    def _new_handle(self) -> pysam.AlignmentFile:
        head = _sniff(self.path)
        kwargs = {}
        if head == b"CRAM":
            if self._reference_path is None:
                raise AlignmentError(f"{self.path}: CRAM needs its reference FASTA to decode reads",
                                     hint="pass the reference (--fasta) the CRAM was written with")
            kwargs["reference_filename"] = str(self._reference_path)
        try:
            bam = pysam.AlignmentFile(str(self.path), "rc" if head == b"CRAM" else "r", **kwargs)
        except OSError as exc:
            if "EOF" in str(exc) or "truncated" in str(exc):
                raise AlignmentError(f"{self.path}: BAM appears truncated (no BGZF EOF block)",
                                     hint="re-create or re-copy the file; `samtools quickcheck -v` checks it") from exc
            raise AlignmentError(f"{self.path}: cannot open as BAM/CRAM ({exc})") from exc
        except ValueError as exc:
            raise AlignmentError(f"{self.path}: not a BAM/CRAM with @SQ header lines ({exc})") from exc
        sort_order = bam.header.to_dict().get("HD", {}).get("SO")
        if sort_order not in (None, "coordinate"):
            bam.close()
            raise AlignmentError(f"{self.path}: BAM must be coordinate-sorted (header says SO:{sort_order})",
                                 hint=f"samtools sort -o sorted.bam {self.path} && samtools index sorted.bam")
        if not bam.has_index():
            bam.close()
            raise AlignmentError(f"{self.path}: no index (.bai/.csi/.crai) found next to the file",
                                 hint=f"samtools index {self.path}")
        return bam

    def _check_region(self, contig: str, start: int, end: int) -> None:
        contigs = self.reference_contigs if self.reference_contigs is not None else self.contigs
        check_interval(contig, start, end, contigs, str(self.path))

    def evidence(self, contig: str, start: int, end: int) -> np.ndarray:
        """float32 [end - start, len(EVIDENCE_FEATURES)] for the 0-based half-open region."""
        self._check_region(contig, start, end)
        if end - start > _MAX_REGION:
            return np.concatenate([self.evidence(contig, s, min(s + _MAX_REGION, end))
                                   for s in range(start, end, _MAX_REGION)])
        acc = _Accumulator(start, end, self.filters.min_base_quality)
        reference = None if self._reference is None else self._reference.fetch(contig, start, end)
        if end == start:
            return acc.result(reference)
        bam = self._open()
        mask, min_mapq = self.filters.flag_mask, self.filters.min_mapping_quality
        last = start
        try:
            for read in bam.fetch(contig, start, end):
                if read.reference_start < last and last > start:  # fetch's first reads may start before `start`
                    self._discard_handle()
                    raise AlignmentError(f"{self.path}: reads out of coordinate order near {contig}:{last + 1:,} "
                                         f"(read {read.query_name} at {read.reference_start + 1:,}): the file is not "
                                         "sorted or its index is not for it",
                                         hint=f"samtools sort -o sorted.bam {self.path} && samtools index sorted.bam")
                last = max(last, read.reference_start)
                if read.flag & mask or read.mapping_quality < min_mapq or read.cigartuples is None:
                    continue
                acc.add(read)
        except OSError as exc:  # htslib reports inflate errors as "truncated file"/"Closing failed"
            self._discard_handle()
            raise AlignmentError(f"{self.path}: BAM corrupt near {contig}:{last + 1:,} ({exc})",
                                 hint="`samtools quickcheck -v` checks it; re-create or re-copy the file") from exc
        return acc.result(reference)

    def per_base(self, interval: Interval) -> np.ndarray:
        """float32 [len(interval), len(EVIDENCE_FEATURES)]: the per-base source contract, `evidence`."""
        return self.evidence(interval.contig, interval.start, interval.end)


class _Accumulator:
    """Buffers reads and scatter-adds them into per-base sums, vectorised over a batch of reads."""

    def __init__(self, start: int, end: int, min_base_quality: int):
        self.start, self.length, self.min_bq = start, end - start, min_base_quality
        n = self.length
        self.coverage = np.zeros((3, n + 1))          # depth, mapq sum, forward count (difference arrays)
        self.deletions = np.zeros(n + 1)
        # at anchor bases: insertions, inserted bases, deletion starts, deleted bases, soft clips
        self.anchored = np.zeros((5, n))
        # per base and allele (pos * 4 + ACGT code): count, base quality sum, mapq sum, forward count
        self.alleles = np.zeros((4, 4 * n))
        self._clear()

    def _clear(self) -> None:
        self.starts, self.mapqs, self.forward, self.n_ops = [], [], [], []
        self.ops, self.seqs, self.quals, self.n_bases = [], [], [], 0

    def add(self, read: pysam.AlignedSegment) -> None:
        cigar = read.cigartuples
        seq, qual = read.query_sequence, read.query_qualities
        if seq is None:  # SEQ '*': the read still covers bases, but has none to count
            n = read.infer_query_length()
            seq, qual = "N" * n, bytes(n)
        elif qual is None:  # QUAL '*': no base passes a positive threshold
            qual = bytes(len(seq))
        self.starts.append(read.reference_start)
        self.mapqs.append(read.mapping_quality)
        self.forward.append(not read.is_reverse)
        self.n_ops.append(len(cigar))
        self.ops.extend(cigar)
        self.seqs.append(seq)
        self.quals.append(qual)
        self.n_bases += len(seq)
        if self.n_bases >= _BATCH_BASES:
            self._flush()

    def _flush(self) -> None:
        if not self.starts:
            return
        n_ops = np.array(self.n_ops, dtype=np.int64)
        read_of_op = np.repeat(np.arange(len(n_ops)), n_ops)
        first_op = np.cumsum(n_ops) - n_ops
        cig = np.array(self.ops, dtype=np.int64)
        op, ln = cig[:, 0], cig[:, 1]
        seq = np.frombuffer("".join(self.seqs).encode("ascii"), dtype=np.uint8)
        qual = np.frombuffer(b"".join(self.quals), dtype=np.uint8)
        qlen = np.array([len(s) for s in self.seqs], dtype=np.int64)
        mapqs = np.array(self.mapqs, dtype=np.float64)
        forward = np.array(self.forward, dtype=np.float64)
        starts = np.array(self.starts, dtype=np.int64)

        def offsets(advance: np.ndarray) -> np.ndarray:  # exclusive cumsum, restarted at each read
            before = np.cumsum(advance) - advance
            return before - before[first_op][read_of_op]

        ref0 = starts[read_of_op] + offsets(ln * _CONSUMES_REF[op]) - self.start
        query0 = (np.cumsum(qlen) - qlen)[read_of_op] + offsets(ln * _CONSUMES_QUERY[op])
        n = self.length

        covers = _COVERS[op]
        lo, hi = np.clip(ref0[covers], 0, n), np.clip(ref0[covers] + ln[covers], 0, n)
        read_idx = read_of_op[covers]
        for row, w in enumerate((None, mapqs[read_idx], forward[read_idx])):
            self.coverage[row] += np.bincount(lo, w, n + 1) - np.bincount(hi, w, n + 1)
        dels = op == _D
        self.deletions += (np.bincount(np.clip(ref0[dels], 0, n), minlength=n + 1)
                           - np.bincount(np.clip(ref0[dels] + ln[dels], 0, n), minlength=n + 1))

        # an indel right after an M/=/X or D run (not a read's first op) is anchored at the base before it
        prev = np.concatenate(([-1], op[:-1]))
        after_block = _COVERS[np.maximum(prev, 0)] & (np.arange(len(op)) != first_op[read_of_op])
        for row, kind in ((0, _I), (2, _D)):
            event = (op == kind) & after_block
            anchor = ref0[event] - 1
            inside = (anchor >= 0) & (anchor < n)
            self.anchored[row] += np.bincount(anchor[inside], minlength=n)
            self.anchored[row + 1] += np.bincount(anchor[inside], ln[event][inside], minlength=n)

        # soft clips, after any hard clip: a leading one at the first aligned base, a trailing one at the last
        last_op = first_op + n_ops - 1
        ref_end = starts + np.bincount(read_of_op, ln * _CONSUMES_REF[op], len(n_ops)).astype(np.int64)

        def clipped(end_op: np.ndarray, inward: int) -> np.ndarray:
            beyond = np.clip(end_op + inward, first_op, last_op)
            return (op[end_op] == _S) | ((op[end_op] == _H) & (beyond != end_op) & (op[beyond] == _S))

        clip_at = np.concatenate((starts[clipped(first_op, 1)], ref_end[clipped(last_op, -1)] - 1)) - self.start
        self.anchored[4] += np.bincount(clip_at[(clip_at >= 0) & (clip_at < n)], minlength=n)

        aligned = _ALIGNED[op]
        a_ref, a_query, a_len = ref0[aligned], query0[aligned], ln[aligned]
        within = np.arange(a_len.sum()) - np.repeat(np.cumsum(a_len) - a_len, a_len)
        pos = np.repeat(a_ref, a_len) + within
        qi = np.repeat(a_query, a_len) + within
        q = qual[qi]
        code = _BASE_CODE[seq[qi]]
        keep = (pos >= 0) & (pos < n) & (q >= self.min_bq) & (code < 4)
        slot = pos[keep] * 4 + code[keep]
        read = np.repeat(read_of_op[aligned], a_len)[keep]
        for row, w in enumerate((None, q[keep].astype(np.float64), mapqs[read], forward[read])):
            self.alleles[row] += np.bincount(slot, w, minlength=4 * n)
        self._clear()

    def result(self, reference: np.ndarray | None = None) -> np.ndarray:
        """The evidence columns; `reference` holds the region's reference bases (ASCII), None: all N."""
        self._flush()
        n = self.length
        depth, mapq_sum, forward = np.cumsum(self.coverage, axis=1)[:, :n]
        count, bq, mq, fwd = self.alleles.reshape(4, n, 4)
        counted = count.sum(axis=1)
        ref = np.full(n, 4) if reference is None else _BASE_CODE[np.asarray(reference, np.uint8) & 0xDF]
        rows = np.arange(n)
        ref_count = np.where(ref < 4, count[rows, np.minimum(ref, 3)], 0)
        others = np.where(np.arange(4) == ref[:, None], -1, count)  # the reference base is never the alt
        alt = others.argmax(axis=1)
        alt_count = count[rows, alt]
        ins, ins_len, del_starts, del_len, clips = self.anchored
        out = np.zeros((n, len(EVIDENCE_FEATURES)), dtype=np.float32)
        out[:, Evidence.depth] = depth
        out[:, BASE_COLUMNS] = count
        out[:, Evidence.deletions] = np.cumsum(self.deletions)[:n]
        out[:, Evidence.insertions] = ins
        out[:, Evidence.deletion_starts] = del_starts
        out[:, Evidence.soft_clips] = clips
        with np.errstate(invalid="ignore", divide="ignore"):
            def mean(total: np.ndarray, weight: np.ndarray) -> np.ndarray:
                return np.where(weight > 0, total / weight, 0)

            out[:, Evidence.mean_base_quality] = mean(bq.sum(axis=1), counted)
            out[:, Evidence.mean_mapping_quality] = mean(mapq_sum, depth)
            out[:, Evidence.forward_fraction] = mean(forward, depth)
            out[:, Evidence.ref_fraction] = mean(ref_count, depth)
            out[:, Evidence.alt_fraction] = mean(alt_count, depth)
            ref_at = np.minimum(ref, 3)
            for sums, ref_col, alt_col in ((bq, Evidence.ref_base_quality, Evidence.alt_base_quality),
                                           (mq, Evidence.ref_mapping_quality, Evidence.alt_mapping_quality),
                                           (fwd, Evidence.ref_forward_fraction, Evidence.alt_forward_fraction)):
                out[:, ref_col] = mean(np.where(ref < 4, sums[rows, ref_at], 0), ref_count)
                out[:, alt_col] = mean(sums[rows, alt], alt_count)
            out[:, Evidence.mean_deletion_length] = mean(del_len, del_starts)
            out[:, Evidence.mean_insertion_length] = mean(ins_len, ins)
        return out
