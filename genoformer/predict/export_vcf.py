"""Predictions HDF5 -> VCF (`genoformer export --vcf`), from `variant/probs` (hom_ref, het, hom_alt)
and the read summaries `variant/alt`, `variant/depth` and `variant/deletion_fraction`:

- a covered base is called when its most likely genotype is not hom_ref, or when
  P(het) + P(hom_alt) >= threshold; GT is the more likely of 0/1 and 1/1;
- ALT is the most supported non-reference base of the reads (`variant/alt`); a called base
  with none, or whose reference base is not A/C/G/T, is not written (counted in the summary);
- a called base that at least `min_deletion_fraction` of its reads delete is a deletion base,
  and each run of consecutive deletion bases becomes one record: REF = the base before the run
  (the VCF anchor) plus the deleted bases, ALT = the anchor (at a contig start, the base after
  the run pads instead); its probabilities are the run's mean;
- GQ = phred(1 - P(GT)) capped at 99; QUAL = phred(P(hom_ref)) (at most 100); FORMAT/GP holds
  the three genotype probabilities; FORMAT/DP the depth; INFO/DF the deletion fraction;
  records with GQ < min_gq get FILTER LowGQ.
Insertions are not written: a per-base genotype says a base is variant, and the reads say which
base it becomes or that it is deleted, but nothing in the file says what sequence is inserted.
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
from genoformer.io.variants import GENOTYPES
from genoformer.outputs import staged_text
from genoformer.predict.export_config import MAX_GQ, ExportConfig, one_line

log = logging.getLogger(__name__)

MIN_P = 1e-10  # probabilities floored here so QUAL stays finite (<= 100)


def phred(p: np.ndarray | float) -> np.ndarray:
    """-10 log10(p), with p floored at MIN_P."""
    return -10 * np.log10(np.maximum(p, MIN_P))


def genotype_quality(p_called: np.ndarray | float) -> np.ndarray:
    """GQ: phred of the probability that the called genotype is wrong, rounded, capped at MAX_GQ."""
    return np.minimum(np.rint(phred(1 - np.asarray(p_called, dtype=np.float64))), MAX_GQ).astype(int)



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
    header.add_line('##INFO=<ID=DF,Number=1,Type=Float,Description="Share of reads deleting the base '
                    '(mean over the deleted bases of a deletion)">')
    header.add_line('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">')
    header.add_line('##FORMAT=<ID=GQ,Number=1,Type=Integer,Description="Genotype quality: phred of '
                    '1 - P(GT), capped at 99">')
    header.add_line('##FORMAT=<ID=DP,Number=1,Type=Integer,Description="Read depth (mean over a deletion)">')
    header.add_line('##FORMAT=<ID=GP,Number=G,Type=Float,Description="Genotype probabilities of the model: '
                    'hom_ref, het, hom_alt">')
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
    records: int = 0
    snvs: int = 0
    deletions: int = 0
    low_gq: int = 0  # written with FILTER LowGQ
    no_alt: int = 0  # called bases without a read-supported alt base: not written
    ref_not_acgt: int = 0  # called bases on N or IUPAC reference bases: not written


def export_vcf(preds: PredictionsFile, config: ExportConfig, blocks: list[Interval], command: str,
               block: int) -> dict:
    """Write config.vcf from the covered `blocks`, reading about `block` bases at a time; returns the counts."""
    import pysam

    if preds.task != "variant" or preds.classes != list(GENOTYPES):
        raise UsageError(f"{preds.path}: --vcf needs variant predictions with classes {', '.join(GENOTYPES)} "
                         f"(this file: task {preds.task}, classes {', '.join(preds.classes)})",
                         hint="export pattern predictions with --bed / --bedgraph")
    reference = _reference(preds, config, {b.contig for b in blocks})
    header = _vcf_header(preds, config, reference, _sample_name(preds, config), command)
    counts = _CallCounts()
    with staged_text(config.vcf, "vcf", ".vcf") as tmp:
        with pysam.VariantFile(str(tmp), "w", header=header) as out:
            with tqdm(total=sum(len(b) for b in blocks), unit="b", unit_scale=True, desc="export vcf",
                      disable=not config.progress, file=sys.stderr, leave=False) as bar:
                order = {name: i for i, name in enumerate(reference.contigs)}  # records follow the ##contig lines
                for iv, p in _whole_runs(preds, config, blocks, block, bar, order):
                    for rec in _block_records(preds, config, reference, iv, p, counts):
                        out.write(_record(out, rec, config, counts))
                        counts.records += 1
    log.info("wrote %s: %d records", config.vcf, counts.records)
    return {"path": config.vcf, **asdict(counts)}


def _is_called(probs: np.ndarray, covered: np.ndarray, threshold: float) -> np.ndarray:
    """bool [n]: covered bases whose argmax is not hom_ref or whose P(het) + P(hom_alt) >= threshold."""
    at = np.flatnonzero(covered)  # only these: files predicted over a region are mostly uncovered
    p = probs[at]
    called = np.zeros(len(covered), dtype=bool)
    called[at] = (p.argmax(1) != 0) | (p[:, 1] + p[:, 2] >= threshold)
    return called


def _is_deletion(p, config: ExportConfig) -> np.ndarray:
    return _is_called(p.probs, p.covered, config.threshold) & (p.deletion_fraction >= config.min_deletion_fraction)


def _whole_runs(preds: PredictionsFile, config: ExportConfig, blocks: list[Interval], block: int, bar: tqdm,
                contig_order: dict[str, int]) -> Iterator[tuple[Interval, Predictions]]:
    """Pieces of about `block` bases with their predictions, contigs in `contig_order`, cut so that no
    deletion run crosses into the next piece (only a run longer than `block` is split)."""
    for stretch in sorted(merge_intervals(blocks), key=lambda iv: (contig_order[iv.contig], iv.start)):
        start = stretch.start
        while start < stretch.end:
            end = min(start + block, stretch.end)
            p = preds.read(Interval(stretch.contig, start, end))
            if p.alt is None:
                raise InputError(f"{preds.path}: has no variant/alt (the model read no BAM), so ALT alleles "
                                 "cannot be written", hint="predict with a model that reads the sample's BAM")
            dels = _is_deletion(p, config)
            if end < stretch.end and dels[-1] and not dels.all():
                end = start + int(np.flatnonzero(~dels)[-1]) + 1  # the next piece starts with the open run
                n = end - start
                p = replace(p, end=end, covered=p.covered[:n], probs=p.probs[:n], alt=p.alt[:n],
                            depth=p.depth[:n], deletion_fraction=p.deletion_fraction[:n])
            yield Interval(stretch.contig, start, end), p
            bar.update(end - start)
            raise_if_terminated()
            start = end


@dataclass
class _Call:
    contig: str
    start: int  # 0-based POS
    ref: str
    alt: str
    probs: np.ndarray  # [3]
    depth: float
    deletion_fraction: float


def _block_records(preds: PredictionsFile, config: ExportConfig, reference, iv: Interval, p: Predictions,
                   counts: _CallCounts) -> list[_Call]:
    """Calls of bases [iv.start, iv.end), sorted by position (deletion runs are whole in the block)."""
    called = _is_called(p.probs, p.covered, config.threshold)
    if not called.any():
        return []
    counts.called_bases += int(called.sum())
    dels = called & (p.deletion_fraction >= config.min_deletion_fraction)
    length = preds.contigs[iv.contig]
    lo, hi = max(iv.start - 1, 0), min(iv.end + 1, length)  # anchor bases around the block
    seq = reference.fetch(iv.contig, lo, hi).tobytes().decode().upper()
    calls = []
    for i in np.flatnonzero(called & ~dels):
        ref, alt = seq[iv.start + i - lo], chr(p.alt[i]) if p.alt[i] else ""
        if ref not in "ACGT":
            counts.ref_not_acgt += 1
        elif not alt or alt == ref:
            counts.no_alt += 1
        else:
            calls.append(_Call(iv.contig, iv.start + int(i), ref, alt, p.probs[i], float(p.depth[i]),
                               float(p.deletion_fraction[i])))
            counts.snvs += 1
    for s, e in zip(*runs(dels)):
        a, b = iv.start + int(s), iv.start + int(e)
        if a > 0:  # anchor before the run
            pos, ref, alt = a - 1, seq[a - 1 - lo:b - lo], seq[a - 1 - lo]
        else:  # the run starts the contig: pad with the base after it (VCF 4.2, section 1.6.1)
            if b >= length:
                continue  # a whole-contig deletion has no base to anchor it
            pos, ref, alt = 0, seq[a - lo:b + 1 - lo], seq[b - lo]
        calls.append(_Call(iv.contig, pos, ref, alt, p.probs[s:e].mean(0), float(p.depth[s:e].mean()),
                           float(p.deletion_fraction[s:e].mean())))
        counts.deletions += 1
    calls.sort(key=lambda c: c.start)
    return calls


def _record(out, call: _Call, config: ExportConfig, counts: _CallCounts):
    probs = np.asarray(call.probs, dtype=np.float64)
    gt = 1 + int(probs[1:].argmax())
    gq = int(genotype_quality(probs[gt]))
    counts.low_gq += gq < config.min_gq
    rec = out.new_record(contig=call.contig, start=call.start, alleles=(call.ref, call.alt),
                         qual=round(float(phred(probs[0])), 2),
                         filter="LowGQ" if gq < config.min_gq else "PASS",
                         info={"DF": round(call.deletion_fraction, 4)})
    sample = rec.samples[0]
    sample["GT"] = (0, 1) if gt == 1 else (1, 1)
    sample["GQ"] = gq
    sample["DP"] = int(round(call.depth))
    sample["GP"] = tuple(round(float(x), 4) for x in probs)
    return rec
