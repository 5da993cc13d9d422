"""Predictions HDF5 -> VCF (`genoformer export --vcf`), from `variant/probs` (the classes of
io.variant_classes: hom_ref, or variant type x genotype) and the reads of the predicted BAM.

The model calls: predict.calls turns called bases into events (an SNV, an insertion after a base,
a run of deleted bases) and the reads around each pick its allele (predict.read_alleles); a
hom_alt call with a second allele of its type in its reads is one multi-allelic record (GT 1/2).
Records are normalised (left-aligned, parsimonious: `bcftools norm -f REF` leaves them unchanged),
their REF is the reference's bases, and there is one record per position.

- QUAL = phred(P(hom_ref)) (at most 100 uncalibrated); GQ = phred(1 - P(GT)) capped at 99, both mapped by
  --calibration (an isotonic map, predict.calibration: fitted on held-out calls) when given; P(GT) the summed
  probability of the het classes for 0/1 and of the hom_alt classes for 1/1 and 1/2; records with
  GQ < min_gq get FILTER LowGQ;
- FORMAT/DP: reads over the site; FORMAT/AD: reads with no allele there, then each ALT's reads;
  FORMAT/CP: the model's class probabilities (VARIANT_CLASSES order).
The reads are those of the BAM recorded in the predictions (or --bam), under io.alignments'
default read filters.
"""
from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from genoformer import __version__
from genoformer.coords import Interval, merge_intervals, runs
from genoformer.errors import InputError, UsageError
from genoformer.interrupt import raise_if_terminated
from genoformer.io.checksums import contig_md5s
from genoformer.io.predictions import Predictions, PredictionsFile
from genoformer.io.variant_classes import VARIANT_CLASSES, check_variant_classes
from genoformer.outputs import staged_text
from genoformer.predict.calibration import Calibration
from genoformer.predict.export_gvcf import NON_REF, GvcfSink, add_gvcf_header, variant_pls
from genoformer.predict.calls import Record, called_bases, ends_in_deletion, events, record_of, window
from genoformer.predict.export_config import ExportConfig, genotype_quality, one_line, phred
from genoformer.normalise import reference_fetcher
from genoformer.predict.read_alleles import ReadAlleles

log = logging.getLogger(__name__)

def _reference(preds: PredictionsFile, config: ExportConfig, exported: set[str]):
    """The reference of the predictions, checked by contig length, and by md5 (of the upper-cased
    sequence) on the `exported` contigs."""
    from genoformer.io.fasta import Reference

    path = config.reference or preds.attrs.get("reference")
    if not path:
        raise UsageError(f"{preds.path}: records no reference; give --reference")
    if not Path(path).is_file():
        raise InputError(f"{preds.path}: its reference {path} is not there", hint="give it with --reference")
    reference = Reference(path)
    md5 = preds.attrs.get("contig_md5") or {}
    checked = [c for c in preds.contigs if c in exported and c in md5 and c in reference.contigs]
    actual = contig_md5s(reference, checked)
    for contig, length in preds.contigs.items():
        if reference.contigs.get(contig) != length:
            raise InputError(f"{reference.path}: is not the reference of {preds.path}: contig {contig} is "
                             f"{reference.contigs.get(contig, 'missing')} bp there, {length:,} in the predictions",
                             hint="give the reference the predictions were made on (--reference)")
        if contig in actual and actual[contig] != md5[contig]:
            raise InputError(f"{reference.path}: sequence of {contig} differs from the one {preds.path} was "
                             "predicted on (md5)", hint="give the reference the predictions were made on")
    return reference


def _sample_name(preds: PredictionsFile, config: ExportConfig) -> str:
    """--sample, else the SM of the predicted BAM's read groups (when one, and readable), else SAMPLE."""
    if config.sample:
        return config.sample
    bam = preds.attrs.get("bam")
    if bam and Path(bam).is_file():
        import pysam

        try:
            with pysam.AlignmentFile(bam, check_sq=False) as fh:
                names = {rg.get("SM") for rg in fh.header.to_dict().get("RG", [])} - {None}
            if len(names) == 1:
                return names.pop()
        except (ValueError, OSError):
            pass  # the name is cosmetic; the path is in the header anyway
    return "SAMPLE"


def _bam_path(preds: PredictionsFile, config: ExportConfig) -> str:
    """--bam, else the BAM recorded in the predictions: the reads that pick each call's allele."""
    path = config.bam or preds.attrs.get("bam")
    if not path:
        raise InputError(f"{preds.path}: records no BAM (the model read no reads), so no allele can be chosen",
                         hint="predict with a variant model that reads the sample's BAM")
    if not Path(path).is_file():
        raise InputError(f"{preds.path}: its BAM {path} is not there", hint="give it with --bam")
    return str(path)


def _vcf_header(preds: PredictionsFile, config: ExportConfig, reference, sample: str, command: str):
    import pysam

    header = pysam.VariantHeader()
    a = preds.attrs
    header.add_line(f"##source=genoformer {__version__}")
    header.add_line(f"##reference=file://{Path(reference.path).resolve()}")
    for name, length in reference.contigs.items():
        header.contigs.add(name, length=length)
    header.add_line('##FILTER=<ID=LowGQ,Description="Genotype quality below --min-gq '
                    f'{config.min_gq}">')
    header.add_line('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">')
    header.add_line('##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Genotype quality: phred of '
                    '1 - P(GT), capped at 99">')
    header.add_line('##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Reads over the site">')
    header.add_line('##FORMAT=<ID=AD,Number=R,Type=Integer,Description="Reads with no allele at the site, '
                    'then reads of each ALT">')
    header.add_line(f'##FORMAT=<ID=CP,Number={len(VARIANT_CLASSES)},Type=Float,Description="Class probabilities '
                    f'of the model: {", ".join(VARIANT_CLASSES)}">')
    for key, value in (("model_sha256", a.get("model_sha256", "")), ("hash_seed", a.get("hash_seed", "")),
                       ("predictions", Path(preds.path).resolve()), ("predict_command", a.get("command", "")),
                       ("export_command", command)):
        header.add_line(f"##genoformer_{key}={one_line(value)}")
    exported = {k: v for k, v in asdict(config).items() if k not in ("force", "progress")}
    header.add_line(f"##genoformer_export_config={json.dumps(exported, separators=(',', ':'))}")
    header.add_sample(sample)
    return header


@dataclass
class _CallCounts:
    called_bases: int = 0
    events: int = 0  # SNVs, insertions and deletion runs the model calls
    records: int = 0
    snvs: int = 0
    insertions: int = 0
    deletions: int = 0
    multi_allelic: int = 0  # records with two ALTs (GT 1/2)
    low_gq: int = 0  # written with FILTER LowGQ
    no_alt: int = 0  # events whose reads show no allele: not written
    ref_not_acgt: int = 0  # records on N or IUPAC reference bases: not written
    merged: int = 0  # events whose record another event at the same position already gave


def export_vcf(preds: PredictionsFile, config: ExportConfig, blocks: list[Interval], command: str,
               block: int, gvcf: bool = False) -> dict:
    """Write config.vcf (with `gvcf`: config.gvcf, reference blocks between the records) from the covered
    `blocks`, reading about `block` bases at a time; returns the counts."""
    import pysam

    path = config.gvcf if gvcf else config.vcf
    if preds.task != "variant":
        raise UsageError(f"{preds.path}: --vcf and --gvcf need variant predictions (this file: task {preds.task})",
                         hint="export pattern predictions with --bed / --bedgraph")
    check_variant_classes(preds.classes, str(preds.path))
    reference = _reference(preds, config, {b.contig for b in blocks})
    bam = _bam_path(preds, config)
    calibration = Calibration.load(config.calibration) if config.calibration else Calibration()
    header = _vcf_header(preds, config, reference, _sample_name(preds, config), command)
    if gvcf:
        add_gvcf_header(header)
    counts = _CallCounts()
    with ReadAlleles(bam, reference) as reads, staged_text(path, "vcf", ".vcf") as tmp:
        with pysam.VariantFile(str(tmp), "w", header=header) as out:
            with tqdm(total=sum(len(b) for b in blocks), unit="b", unit_scale=True, desc="export gvcf" if gvcf
                      else "export vcf", disable=not config.progress, file=sys.stderr, leave=False) as bar:
                order = {name: i for i, name in enumerate(reference.contigs)}  # records follow the ##contig lines

                def write(rec: Record, non_ref: bool = False) -> None:
                    out.write(_vcf_record(out, rec, config=config, counts=counts, calibration=calibration,
                                          non_ref=non_ref))

                sink = GvcfSink(out, write, reference, calibration.gq_of) if gvcf else _VcfSink(write)
                pending = _Pending(sink, counts)
                for iv, p in _whole_runs(preds, config, blocks, block, bar, order):
                    pending.flush(iv.contig, iv.start - FLUSH_MARGIN)
                    sink.add_bases(iv, p)
                    fetch = reference_fetcher(reference, iv.contig)
                    found = events(iv.start, p.probs, p.covered, config.threshold)
                    counts.called_bases += int(called_bases(p.probs, p.covered, config.threshold).sum())
                    counts.events += len(found)
                    sites = reads.sites(iv.contig, [window(event) for event in found])
                    for event, site in zip(found, sites):
                        rec = record_of(iv.contig, event, site, fetch)
                        if rec is None:
                            counts.no_alt += 1
                        elif any(b not in "ACGT" for b in rec.alleles[0]):
                            counts.ref_not_acgt += 1
                        else:
                            pending.add(rec)
                pending.flush(None, 0)
    log.info("wrote %s: %d records", path, counts.records)
    return {"path": path, **asdict(counts)} | ({"reference_blocks": sink.blocks} if gvcf else {})


FLUSH_MARGIN = 10_000  # records this far before a block are final: left-alignment moves them less


class _VcfSink:
    """Writes the records, nothing between them."""

    def __init__(self, write):
        self.write = write

    def add_bases(self, iv: Interval, p: Predictions) -> None:
        pass

    def emit(self, contig: str, records: list[Record], before: int | None) -> None:
        for rec in records:
            self.write(rec)


class _Pending:
    """Records held until no later block can give one at or before their position; one per position.
    The sink gets them in order, with the position up to which its contig is final (None: all of it)."""

    def __init__(self, sink, counts: _CallCounts):
        self.sink, self.counts = sink, counts
        self.records: dict[int, Record] = {}
        self.contig: str | None = None

    def add(self, rec: Record) -> None:
        held = self.records.get(rec.pos)
        if held is not None:
            self.counts.merged += 1
            if held.p_hom_ref <= rec.p_hom_ref:
                return
        self.records[rec.pos] = rec

    def flush(self, contig: str | None, before: int) -> None:
        """Emit what lies before `before` on `contig`; a new contig (or None) ends the current one first."""
        if contig != self.contig:
            if self.contig is not None:
                self.sink.emit(self.contig, [self.records[pos] for pos in sorted(self.records)], None)
            self.records, self.contig = {}, contig
            return
        done = sorted(pos for pos in self.records if pos < before)
        self.sink.emit(contig, [self.records.pop(pos) for pos in done], before)


def _whole_runs(preds: PredictionsFile, config: ExportConfig, blocks: list[Interval], block: int, bar: tqdm,
                contig_order: dict[str, int]) -> Iterator[tuple[Interval, Predictions]]:
    """Pieces of about `block` bases with their predictions, contigs in `contig_order`, cut so that no
    deletion run crosses into the next piece (only a run longer than `block` is split)."""
    for stretch in sorted(merge_intervals(blocks), key=lambda iv: (contig_order[iv.contig], iv.start)):
        start = stretch.start
        while start < stretch.end:
            end = min(start + block, stretch.end)
            p = preds.read(Interval(stretch.contig, start, end))
            dels = ends_in_deletion(p.probs, p.covered, config.threshold)
            if end < stretch.end and dels[-1] and not dels.all():
                end = start + int(np.flatnonzero(~dels)[-1]) + 1  # the next piece starts with the open run
                n = end - start
                p = replace(p, end=end, covered=p.covered[:n], probs=p.probs[:n])
            yield Interval(stretch.contig, start, end), p
            bar.update(end - start)
            raise_if_terminated()
            start = end


def _vcf_record(out, rec: Record, *, config: ExportConfig, counts: _CallCounts, calibration: Calibration,
                non_ref: bool = False):
    """The VCF record of `rec`; with `non_ref` (a gVCF) its ALTs end with <*> and it carries PL."""
    gq = int(genotype_quality(rec.p_genotype, calibration.gq_of))
    counts.low_gq += gq < config.min_gq
    counts.records += 1
    counts.multi_allelic += len(rec.alleles) > 2
    ref = rec.alleles[0]
    for alt in rec.alleles[1:]:
        kind = "snvs" if len(alt) == len(ref) else "insertions" if len(alt) > len(ref) else "deletions"
        setattr(counts, kind, getattr(counts, kind) + 1)
    vcf = out.new_record(contig=rec.contig, start=rec.pos, alleles=rec.alleles + (NON_REF,) * non_ref,
                         qual=round(float(calibration.qual_of(phred(rec.p_hom_ref))), 2),
                         filter="LowGQ" if gq < config.min_gq else "PASS")
    sample = vcf.samples[0]
    sample["GT"] = rec.gt
    sample["GQ"] = gq
    sample["DP"] = rec.depth
    sample["AD"] = rec.allele_depths + (0,) * non_ref
    if non_ref:
        sample["PL"] = variant_pls(rec)
    sample["CP"] = tuple(round(float(x), 4) for x in rec.probs)
    return vcf
