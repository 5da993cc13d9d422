"""Predictions HDF5 -> VCF (variant files) and BED / bedGraph (per-class probability tracks).

VCF, from `variant/probs` (hom_ref, het, hom_alt) and the read summaries `variant/alt`,
`variant/depth` and `variant/deletion_fraction`:
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

BED (BED6: contig, start, end, class, score, "."): for each class, runs of adjacent covered bases
with probability >= threshold; score = 1000 x the run's mean probability. bedGraph (one file per
class): runs of adjacent covered bases whose probability, rounded to `digits` decimals, is
equal. Outputs ending in .gz are bgzipped and tabix-indexed. Every output is written under a
temporary name and renamed when complete; an existing output is replaced only with `force`.
The file is read a block of bases at a time, so memory does not grow with the contig.
"""
from __future__ import annotations

import json
import logging
import math
import shlex
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from genoformer import __version__
from genoformer.coords import Interval, merge_intervals
from genoformer.errors import InputError, OutputError, UsageError
from genoformer.interrupt import raise_if_terminated
from genoformer.io.checksums import contig_md5s
from genoformer.io.predictions import Predictions, PredictionsFile, open_predictions
from genoformer.io.variants import GENOTYPES
from genoformer.outputs import refuse_existing, staged_text

log = logging.getLogger(__name__)

BLOCK = 1 << 20  # bases read at a time (a multiple of the file's chunk length)
MAX_GQ, MIN_P = 99, 1e-10  # GQ cap; probabilities floored here so QUAL stays finite (<= 100)
_SCAN = 1 << 24  # bases of a `covered` mask read at a time while finding covered stretches


@dataclass
class ExportConfig:
    """What `export` writes; recorded in the VCF header and BED comment line."""
    predictions: str
    vcf: str | None = None  # calls.vcf.gz (bgzip + tabix) or calls.vcf (plain)
    bed: str | None = None  # thresholded runs of every chosen class
    bedgraph: str | None = None  # per-class probability runs; with several classes, one file each
    classes: list[str] = field(default_factory=list)  # classes for BED/bedGraph (default: all)
    threshold: float = 0.5  # VCF: P(non-ref) that calls a base; BED: class probability
    min_gq: int = 0  # VCF: GQ below this -> FILTER LowGQ
    min_deletion_fraction: float = 0.25  # VCF: share of reads deleting a called base that makes it a deletion
    digits: int = 2  # bedGraph: decimals of the rounded probability
    sample: str | None = None  # VCF sample name (default: the BAM's SM, else SAMPLE)
    reference: str | None = None  # default: the reference recorded in the predictions file
    regions: list[str] = field(default_factory=list)  # samtools-style, 1-based; default: everything covered
    force: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not (self.vcf or self.bed or self.bedgraph):
            raise UsageError("nothing to export: give --vcf, --bed and/or --bedgraph")
        if not 0 < self.threshold <= 1:
            raise UsageError(f"threshold must be in (0, 1], got {self.threshold}")
        if not 0 <= self.min_deletion_fraction <= 1:
            raise UsageError(f"min-deletion-fraction must be in [0, 1], got {self.min_deletion_fraction}")
        if not 0 <= self.min_gq <= MAX_GQ:
            raise UsageError(f"min-gq must be between 0 and {MAX_GQ}, got {self.min_gq}")
        if not 0 <= self.digits <= 4:
            raise UsageError(f"digits must be between 0 and 4 (the file stores float16), got {self.digits}")
        if self.vcf and self.vcf.endswith(".bcf"):
            raise UsageError(f"{self.vcf}: BCF output is not supported; name it .vcf.gz",
                             hint="convert afterwards with: bcftools view -Ob")


def phred(p: np.ndarray | float) -> np.ndarray:
    """-10 log10(p), with p floored at MIN_P."""
    return -10 * np.log10(np.maximum(p, MIN_P))


def genotype_quality(p_called: np.ndarray | float) -> np.ndarray:
    """GQ: phred of the probability that the called genotype is wrong, rounded, capped at MAX_GQ."""
    return np.minimum(np.rint(phred(1 - np.asarray(p_called, dtype=np.float64))), MAX_GQ).astype(int)


def _make_folder(path: str | None) -> None:
    """Create an output's folder, as predict does for its --out."""
    if not path:
        return
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"{path}: cannot create its folder {Path(path).parent} ({e.strerror or e})") from None


def export(config: ExportConfig, command: str | None = None) -> dict:
    """Write the outputs of `config`; returns a summary (counts per output)."""
    outputs = [p for p in (config.vcf, config.bed) if p]
    for path in [*outputs, config.bedgraph]:
        _make_folder(path)
    for path in outputs:
        refuse_existing(path, config.force)
    with open_predictions(config.predictions) as preds:
        classes = _chosen_classes(preds, config)
        bedgraphs = _bedgraph_paths(config.bedgraph, classes) if config.bedgraph else {}
        for path in bedgraphs.values():
            refuse_existing(path, config.force)
        blocks = covered_blocks(preds, config.regions)
        if not blocks:
            log.warning("%s: no covered bases%s; the outputs hold no records", preds.path,
                        " in the regions given" if config.regions else "")
        command = command or shlex.join(["genoformer", *sys.argv[1:]])
        summary: dict = {"predictions": str(preds.path)}
        if config.vcf:
            summary["vcf"] = _export_vcf(preds, config, blocks, command)
        if config.bed:
            summary["bed"] = _export_bed(preds, config, classes, blocks, command)
        for name, path in bedgraphs.items():
            summary.setdefault("bedgraph", {})[name] = _export_bedgraph(preds, config, name, path, blocks)
    return summary


def _chosen_classes(preds: PredictionsFile, config: ExportConfig) -> list[str]:
    unknown = [c for c in config.classes if c not in preds.classes]
    if unknown:
        raise UsageError(f"{preds.path}: no class {', '.join(unknown)} (classes: {', '.join(preds.classes)})")
    return list(dict.fromkeys(config.classes)) or list(preds.classes)


def _bedgraph_paths(path: str, classes: list[str]) -> dict[str, Path]:
    """One bedGraph per class: `path` itself for one class, else the class name before the suffix."""
    path = Path(path)
    if len(classes) == 1:
        return {classes[0]: path}
    for suffix in (".bedgraph.gz", ".bedGraph.gz", ".bg.gz", ".bedgraph", ".bedGraph", ".bg"):
        if path.name.endswith(suffix):
            stem = path.name[:-len(suffix)]
            break
    else:
        stem, suffix = path.name, ""
    return {c: path.with_name(f"{stem}.{c}{suffix}") for c in classes}


def covered_blocks(preds: PredictionsFile, regions: list[str], block: int | None = None) -> list[Interval]:
    """Pieces of at most `block` (default BLOCK) bases that hold exactly the covered bases inside the
    regions (default: whole contigs), in file order. Reads only the `covered` masks, so a genome-wide
    file predicted over a few regions costs what those regions do."""
    block = block or BLOCK
    wanted = merge_intervals(preds.interval(r) for r in regions) if regions else \
        [Interval(c, 0, n) for c, n in preds.contigs.items()]
    stretches: list[list] = []
    with h5py.File(preds.path, "r") as fh:
        for iv in wanted:
            covered = fh[f"contigs/{iv.contig}/covered"]
            for lo in range(iv.start, iv.end, _SCAN):
                starts, ends = _runs(covered[lo:min(lo + _SCAN, iv.end)])
                for s, e in zip((starts + lo).tolist(), (ends + lo).tolist()):
                    if stretches and stretches[-1][0] == iv.contig and stretches[-1][2] == s:
                        stretches[-1][2] = e  # continues across the scan boundary
                    else:
                        stretches.append([iv.contig, s, e])
    return [Interval(c, a, min(a + block, e)) for c, s, e in stretches for a in range(s, e, block)]


def _progress(blocks: list[Interval], config: ExportConfig, what: str) -> Iterator[Interval]:
    with tqdm(total=sum(len(b) for b in blocks), unit="b", unit_scale=True, desc=what,
              disable=not config.progress, file=sys.stderr, leave=False) as bar:
        for block in blocks:
            yield block
            bar.update(len(block))
            raise_if_terminated()


def _runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) of each run of True in a bool array."""
    if not mask.any():
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    bounds = np.concatenate([[0], np.flatnonzero(mask[1:] != mask[:-1]) + 1, [len(mask)]])
    keep = mask[bounds[:-1]]
    return bounds[:-1][keep], bounds[1:][keep]


# ---------------------------------------------------------------------------------------------
# VCF


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
        header.add_line(f"##genoformer_{key}={_one_line(value)}")
    exported = {k: v for k, v in asdict(config).items() if k not in ("force", "progress")}
    header.add_line(f"##genoformer_export_config={json.dumps(exported, separators=(',', ':'))}")
    header.add_sample(sample)
    return header


def _one_line(value) -> str:
    return str(value).replace("\n", " ")


@dataclass
class _CallCounts:
    called_bases: int = 0
    records: int = 0
    snvs: int = 0
    deletions: int = 0
    low_gq: int = 0  # written with FILTER LowGQ
    no_alt: int = 0  # called bases without a read-supported alt base: not written
    ref_not_acgt: int = 0  # called bases on N or IUPAC reference bases: not written


def _export_vcf(preds: PredictionsFile, config: ExportConfig, blocks: list[Interval], command: str) -> dict:
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
                for iv, p in _whole_runs(preds, config, blocks, bar, order):
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


def _whole_runs(preds: PredictionsFile, config: ExportConfig, blocks: list[Interval], bar: tqdm,
                contig_order: dict[str, int]) -> Iterator[tuple[Interval, Predictions]]:
    """Pieces of about BLOCK bases with their predictions, contigs in `contig_order`, cut so that no
    deletion run crosses into the next piece (only a run longer than BLOCK is split)."""
    for stretch in sorted(merge_intervals(blocks), key=lambda iv: (contig_order[iv.contig], iv.start)):
        start = stretch.start
        while start < stretch.end:
            end = min(start + BLOCK, stretch.end)
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
    for s, e in zip(*_runs(dels)):
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


# ---------------------------------------------------------------------------------------------
# BED and bedGraph


def _export_bed(preds: PredictionsFile, config: ExportConfig, classes: list[str], blocks: list[Interval],
                command: str) -> dict:
    columns = [preds.classes.index(c) for c in classes]
    counts = dict.fromkeys(classes, 0)
    with staged_text(config.bed, "bed", ".bed") as tmp, open(tmp, "w") as out:
        out.write(f"#genoformer {__version__}: {_one_line(command)} (threshold {config.threshold})\n")
        for contig, rows in _bed_rows(preds, config, columns, blocks):
            for start, end, k, mean in rows:
                out.write(f"{contig}\t{start}\t{end}\t{classes[k]}\t{int(round(1000 * mean))}\t.\n")
                counts[classes[k]] += 1
    return {"path": config.bed, "intervals": counts}


def _bed_rows(preds: PredictionsFile, config: ExportConfig, columns: list[int], blocks: list[Interval]):
    """(contig, rows sorted by start) per stretch of blocks: runs of prob >= threshold per class.

    A run may continue across blocks, so each class keeps its open run (start, sum, count); a
    closed run is emitted once no open run starts before it, which keeps the rows sorted.
    """
    contig, pending = None, []
    open_runs: dict[int, list] = {}
    previous_end = None
    for iv in _progress(blocks, config, "export bed"):
        if iv.contig != contig or iv.start != previous_end:  # a new contig or region: close everything
            pending += [(s, e, k, total / n) for k, (s, e, total, n) in open_runs.items()]
            if pending:
                yield contig, sorted(pending)
            contig, pending, open_runs = iv.contig, [], {}
        previous_end = iv.end
        p = preds.read(iv)
        for k, col in enumerate(columns):
            prob = p.probs[:, col]
            hit = p.covered & (prob >= config.threshold)
            starts, ends = _runs(hit)
            cumulative = np.concatenate([[0.0], np.cumsum(prob, dtype=np.float64)])
            sums = cumulative[ends] - cumulative[starts]
            for s, e, total in zip(starts.tolist(), ends.tolist(), sums.tolist()):
                n = e - s
                run = open_runs.pop(k, None)
                if run is not None and s == 0 and run[1] == iv.start:  # continues the open run
                    s_abs, total, n = run[0], total + run[2], n + run[3]
                else:
                    if run is not None:
                        pending.append((run[0], run[1], k, run[2] / run[3]))
                    s_abs = iv.start + s
                open_runs[k] = [s_abs, iv.start + e, total, n]
            run = open_runs.get(k)
            if run is not None and run[1] < iv.end:  # ended inside this block
                pending.append((run[0], run[1], k, run[2] / run[3]))
                del open_runs[k]
        first_open = min((r[0] for r in open_runs.values()), default=math.inf)
        ready = [r for r in pending if r[0] < first_open]
        if ready:
            pending = [r for r in pending if r[0] >= first_open]
            yield contig, sorted(ready)
    pending += [(s, e, k, total / n) for k, (s, e, total, n) in open_runs.items()]
    if pending:
        yield contig, sorted(pending)


def _export_bedgraph(preds: PredictionsFile, config: ExportConfig, name: str, path: Path,
                     blocks: list[Interval]) -> dict:
    col, scale = preds.classes.index(name), 10 ** config.digits
    labels = [f"{v / scale:.{config.digits}f}" for v in range(scale + 1)]  # probabilities lie in [0, 1]
    rows = 0
    with staged_text(path, "bed", ".bedgraph") as tmp, open(tmp, "w") as out:
        run = None  # [contig, start, end, level] not yet written: the next block may extend it
        for iv in _progress(blocks, config, f"export bedgraph {name}"):
            p = preds.read(iv)  # blocks hold covered bases only
            level = np.rint(np.clip(p.probs[:, col], 0, 1) * scale).astype(np.int64)
            cuts = np.flatnonzero(np.diff(level)) + 1
            starts = np.concatenate([[0], cuts]) + iv.start
            ends = np.concatenate([cuts, [len(level)]]) + iv.start
            levels = level[starts - iv.start]
            if run is not None and run[2] == iv.start and run[0] == iv.contig and run[3] == levels[0]:
                starts[0] = run[1]  # the open run goes on into this block
            elif run is not None:
                out.write(f"{run[0]}\t{run[1]}\t{run[2]}\t{labels[run[3]]}\n")
                rows += 1
            run = [iv.contig, int(starts[-1]), int(ends[-1]), int(levels[-1])]
            out.write("".join(f"{iv.contig}\t{a}\t{b}\t{labels[v]}\n"
                              for a, b, v in zip(starts[:-1].tolist(), ends[:-1].tolist(), levels[:-1].tolist())))
            rows += len(starts) - 1
        if run is not None:
            out.write(f"{run[0]}\t{run[1]}\t{run[2]}\t{labels[run[3]]}\n")
            rows += 1
    return {"path": str(path), "intervals": rows}
