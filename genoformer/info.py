"""`genoformer info`: a summary and pre-flight check of the inputs, in the spirit of `samtools quickcheck`.

Everything is opened through the same readers training and prediction use, so a file that
`summarize` accepts is one the other commands accept, and a bad one fails here first.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np
import pysam

from genoformer.coords import Interval, read_bed
from genoformer.errors import FastaError, InputError
from genoformer.interrupt import raise_if_terminated
from genoformer.io.alignments import Alignments, ReadFilters
from genoformer.io.evidence import Evidence
from genoformer.io.fasta import Reference
from genoformer.io.tracks import Tracks
from genoformer.io.variants import TruthVariants
from genoformer.tokenize import KmerTokenizer

_CHUNK = 1 << 22  # bases fetched at a time, so whole chromosomes never sit in memory at once


def _variant_kind(ref: str, alts: tuple[str, ...]) -> str:
    if all(len(ref) == 1 and len(a) == 1 for a in alts):
        return "snv"
    if len(alts) == 1 and ref[:1] == alts[0][:1] and (len(ref) == 1 or len(alts[0]) == 1):
        return "insertion" if len(alts[0]) > len(ref) else "deletion"
    return "complex"


def _sequence_counts(reference: Reference, iv: Interval, tokenizer: KmerTokenizer | None) -> dict:
    n_bases = soft = 0
    for s in range(iv.start, iv.end, _CHUNK):
        raise_if_terminated()
        seq = reference.fetch(iv.contig, s, min(s + _CHUNK, iv.end))
        n_bases += int(np.count_nonzero((seq == ord("N")) | (seq == ord("n"))))
        soft += int(np.count_nonzero(seq >= ord("a")))
        if tokenizer is not None:
            try:
                tokenizer.encode(seq)
            except InputError as err:
                raise FastaError(f"{reference.path}: {iv.contig} from {s + 1:,}: {err}") from err
    counts = {"name": iv.contig, "start": iv.start, "end": iv.end, "length": len(iv),
              "n_bases": n_bases, "soft_masked_bases": soft}
    if tokenizer is not None:
        counts["tokens"] = tokenizer.n_tokens(len(iv))
    return counts


def _reference_filename(alignments: Alignments) -> str | None:
    ref = alignments._reference_path  # only CRAM needs it, and the Alignments check already vetted it
    return str(ref) if ref is not None else None


def _read_counts(alignments: Alignments, iv: Interval) -> dict:
    depth_sum = 0.0
    for s in range(iv.start, iv.end, _CHUNK):
        raise_if_terminated()
        evidence = alignments.evidence(iv.contig, s, min(s + _CHUNK, iv.end))
        depth_sum += float(evidence[:, Evidence.depth].sum(dtype=np.float64))
    flags, min_mapq = alignments.filters.flag_mask, alignments.filters.min_mapping_quality
    with pysam.AlignmentFile(str(alignments.path), reference_filename=_reference_filename(alignments)) as bam:
        reads = bam.count(iv.contig, iv.start, iv.end,
                          read_callback=lambda r: not r.flag & flags and r.mapping_quality >= min_mapq)
    return {"reads": reads,
            "mean_depth": depth_sum / len(iv) if len(iv) else 0.0}


def _bed_counts(path: str | os.PathLike, contigs: dict[str, int]) -> dict:
    """Intervals and bases of a BED file, or per feature type of a GFF3/GTF (read as `train --bed` reads it)."""
    if Path(str(path).removesuffix(".gz")).suffix.lower() not in (".gff", ".gff3", ".gtf", ".txt"):
        ivs = read_bed(path, contigs)
        return {"path": str(path), "intervals": len(ivs), "bases": sum(len(iv) for iv in ivs)}
    classes = Tracks.from_files([path], contigs).counts()
    return {"path": str(path), "intervals": sum(c["intervals"] for c in classes.values()),
            "bases": sum(c["bases"] for c in classes.values()), "classes": classes}


def summarize(reference: str | os.PathLike, bam: str | os.PathLike | None = None,
              vcf: str | os.PathLike | None = None, bed: str | os.PathLike | None = None,
              region: str | None = None, filters: ReadFilters = ReadFilters(),
              k: int | None = None, stride: int | None = None) -> dict:
    """Contigs, N and soft-masked bases, reads and mean depth, variants by type and genotype.

    With `region` (samtools style, 1-based) every count is restricted to it; otherwise it
    covers whole contigs.  Read counts use the same flag/MAPQ filters as the read evidence.
    With `k`, the sequence is checked as DNA and the k-mer token count is reported.
    """
    tokenizer = KmerTokenizer(k, stride) if k is not None else None
    ref = Reference(reference, alphabet="dna" if tokenizer else "any")
    intervals = ([ref.region(region)] if region else
                 [Interval(name, 0, length) for name, length in ref.contigs.items()])
    out: dict = {
        "reference": {"path": str(ref.path), "n_contigs": len(ref.contigs),
                      "total_length": sum(ref.contigs.values()), "alphabet_check": "ok"},
        "region": intervals[0].to_region() if region else None,
        "sequence": [_sequence_counts(ref, iv, tokenizer) for iv in intervals],
    }
    if bam is not None:
        aln = Alignments(bam, ref, filters)
        per = {iv.contig: _read_counts(aln, iv) for iv in intervals}
        total = sum(len(iv) for iv in intervals)
        out["alignments"] = {
            "path": str(aln.path), "filters": {"min_mapping_quality": filters.min_mapping_quality,
                                               "min_base_quality": filters.min_base_quality,
                                               "exclude_flags": filters.flag_mask},
            "reads": sum(p["reads"] for p in per.values()),
            "mean_depth": sum(p["mean_depth"] * len(iv) for iv, p in zip(intervals, per.values())) / total,
            "per_contig": per,
        }
    if vcf is not None:
        truth = TruthVariants(vcf, ref)
        kinds, genotypes = Counter(), Counter()
        for iv in intervals:
            for v in truth.records(iv.contig, iv.start, iv.end):
                raise_if_terminated()
                if v.start < iv.start:  # fetch also returns records that start before and overlap
                    continue
                kinds[_variant_kind(v.ref, v.alts)] += 1
                genotypes["/".join("." if a is None else str(a) for a in v.gt)] += 1
        out["variants"] = {"path": str(truth.path), "sample": truth.sample, "total": sum(kinds.values()),
                           "by_type": dict(sorted(kinds.items())),
                           "indels_or_complex": sum(n for k, n in kinds.items() if k != "snv"),
                           "by_genotype": dict(sorted(genotypes.items()))}
    if bed is not None:
        out["bed"] = _bed_counts(bed, ref.contigs)
    return out


def format_summary(summary: dict) -> str:
    """A human-readable table of `summarize`'s result."""
    ref = summary["reference"]
    lines = [f"reference  {ref['path']}  ({ref['n_contigs']} contigs, {ref['total_length']:,} bp)"]
    if summary["region"]:
        lines.append(f"region     {summary['region']}")
    if "tokens" in summary["sequence"][0]:
        lines.append(f"tokens     {sum(c['tokens'] for c in summary['sequence']):,}")
    lines.append(f"{'contig':<20}{'start':>14}{'end':>14}{'N bases':>14}{'soft-masked':>14}")
    for c in summary["sequence"]:
        lines.append(f"{c['name']:<20}{c['start']:>14,}{c['end']:>14,}{c['n_bases']:>14,}{c['soft_masked_bases']:>14,}")
    if "alignments" in summary:
        a = summary["alignments"]
        lines.append(f"reads      {a['path']}: {a['reads']:,} reads passing filters, mean depth {a['mean_depth']:.2f}")
    if "variants" in summary:
        v = summary["variants"]
        kinds = ", ".join(f"{k} {n}" for k, n in v["by_type"].items())
        gts = ", ".join(f"{g} {n}" for g, n in v["by_genotype"].items())
        lines.append(f"variants   {v['path']} (sample {v['sample']}): {v['total']} ({kinds}); genotypes {gts}")
    if "bed" in summary:
        b = summary["bed"]
        lines.append(f"bed        {b['path']}: {b['intervals']:,} intervals, {b['bases']:,} bp")
        for name, c in b.get("classes", {}).items():
            lines.append(f"  {name:<18}{c['intervals']:>10,} intervals, {c['bases']:,} bp")
    return "\n".join(lines)
