"""`genoformer score-variants`: what each variant of a VCF does to a model's predictions.

Each ALT allele of each record is scored against REF in windows centred on the allele
(windows.py: the alternate window is the reference window with the allele substituted and
re-centred; near a contig end the window shifts, it is never dropped). Scores, per output class c:

  diff_c  p_alt - p_ref. Per-base models: probabilities averaged over the allele's bases
          (--aggregate allele, the default: for an SNV the variant base; REF's bases in the
          reference window, ALT's in the alternate one), or summed over each window
          (--aggregate window). classify models: the class probabilities of the two windows.
  lor_c   the log-odds ratio logit(p_alt) - logit(p_ref) of the same averages (over the whole
          window for --aggregate window), probabilities clipped to [1e-6, 1 - 1e-6].
  llr     mlm models: the zero-shot log-likelihood ratio. The bases where ALT differs from REF
          are hidden as in training, the rest of the window is the reference, and llr is the sum
          over them of log P(ALT's letter) - log P(REF's letter) (per-base mlm, the default: the
          bases are N to the stem and every token spelling one is [MASK]); for token-level mlm
          checkpoints, the tokens covering those bases are masked and llr sums log P(ALT's k-mer)
          - log P(REF's k-mer) over them. Substitutions of A, C, G, T only (SNVs, MNPs): an indel
          changes the tokens, and is written unscored.
Alleles are written in upper case in their windows (as the VCF gives them); the flanking bases keep
the reference's soft-masking (lower case), which a model's per-base stem reads.
--rc-average also runs each window's reverse complement and averages the probabilities (per-base
ones flipped back onto the forward strand), or the two strands' llr. Scoring ALT -> REF on the
genome carrying ALT gives the negated scores (same windows, swapped).

Alleles that cannot be scored (STATUS below) are written with empty scores and their status; a
record is never dropped. Models that read aligned reads are refused: no reads exist for the ALT
allele. classify models score windows of --window bases, which must be given (their recorded
window is only the longest sequence they accepted).

Output: OUT.vcf.gz (+ .tbi; sites only, INFO fields declared in the header) and OUT.tsv, each
written under a temporary name and renamed only when complete. There is no --resume: a killed
run leaves neither file behind, and is simply run again.
"""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from genoformer.apply.model import AppliedModel, check_dna, load_model, refuse_reads
from genoformer.apply.provenance import provenance
from genoformer.apply.score_files import ScoreFiles
from genoformer.apply.scorers import MlmScorer, WindowScorer
from genoformer.apply.vcf import Variant, read_variants, scorable
from genoformer.apply.windows import differing
from genoformer.devices import default_batch
from genoformer.errors import UsageError
from genoformer.interrupt import raise_if_terminated
from genoformer.io.checksums import contig_md5s
from genoformer.outputs import refuse_existing

AGGREGATES = ("allele", "window")
STATUS = {
    "scored": "scored",
    "not_sequence": "symbolic, breakend, '*' or missing ALT: nothing to put in the window",
    "longer_than_window": "REF or ALT longer than the window",
    "mlm_indel": "an mlm model scores substitutions only (REF and ALT of equal length)",
    "mlm_not_acgt": "an mlm model predicts A, C, G and T: REF or ALT has another base where they differ",
}


@dataclass
class ScoreConfig:
    model: str = ""
    reference: str = ""
    vcf: str = ""
    out: str = "scores"  # prefix: OUT.vcf.gz, OUT.tsv
    window: int | None = None  # None: the model's training window (classify models need it given)
    aggregate: str = "allele"
    rc_average: bool = False
    batch_size: int | None = None  # windows per forward pass; None: devices.default_batch
    device: str = "auto"
    hash_seed: int = 0
    force: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if not (self.model and self.reference and self.vcf):
            raise UsageError("give a model (--model), a reference (--reference) and variants (--vcf)")
        if self.aggregate not in AGGREGATES:
            raise UsageError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {self.aggregate!r}")
        for name in ("window", "batch_size"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UsageError(f"{name.replace('_', '-')} must be an integer >= 1, got {value!r}")


def output_paths(out: str | Path) -> tuple[Path, Path]:
    """(VCF, TSV) written for the prefix `out`."""
    return Path(f"{out}.vcf.gz"), Path(f"{out}.tsv")


def _window(am: AppliedModel, config: ScoreConfig) -> int:
    if am.task == "classify":
        if config.window is None:
            raise UsageError(f"{am.path}: a classify model labels whole sequences and records no reference "
                             "window to score variants in", hint="give --window N, the length of the sequences "
                                                                  "it was trained on (e.g. 251)")
        if am.window is not None and config.window > am.window:
            raise UsageError(f"window {config.window:,} is longer than the longest sequence the model accepts "
                             f"({am.window:,})")
    window = config.window or am.window
    if not window:
        raise UsageError(f"{am.path}: the checkpoint records no training window; give --window")
    if window < am.tokenizer.k:
        raise UsageError(f"window {window:,} is smaller than the model's k = {am.tokenizer.k}")
    return window


def _scorer(am: AppliedModel, reference, window: int, config: ScoreConfig):
    if am.task == "mlm":
        return MlmScorer(am, reference, window, config.rc_average)
    return WindowScorer(am, reference, window, config.aggregate, config.rc_average)


def _status(am: AppliedModel, v: Variant, alt: str, window: int) -> str:
    if not scorable(alt):
        return "not_sequence"
    if max(len(v.ref), len(alt)) > window:
        return "longer_than_window"
    if am.task == "mlm" and len(alt) != len(v.ref):
        return "mlm_indel"
    if am.task == "mlm":
        changed = differing(v.ref, alt.upper())
        if not set(v.ref[i] for i in changed) | set(alt[i].upper() for i in changed) <= set("ACGT"):
            return "mlm_not_acgt"
    return "scored"


def score_variants(config: ScoreConfig) -> dict:
    """Score every allele of config.vcf; write OUT.vcf.gz (+ .tbi) and OUT.tsv; return a summary."""
    from genoformer.io.fasta import Reference

    started = time.perf_counter()
    vcf_out, tsv_out = (refuse_existing(p, config.force) for p in output_paths(config.out))
    am = load_model(config.model, config.device, config.hash_seed)
    refuse_reads(am, "score-variants")
    check_dna(am, "score-variants")
    window = _window(am, config)
    with Reference(config.reference) as reference:
        variants = read_variants(config.vcf, reference)
        scorer = _scorer(am, reference, window, config)
        batch = config.batch_size or default_batch(window, am.device)
        md5 = contig_md5s(reference, sorted({v.contig for v in variants}, key=list(reference.contigs).index))
        attrs = provenance(am, config, {"vcf": config.vcf}) | {
            "reference": str(Path(config.reference).resolve()), "window": window}
        counts = dict.fromkeys(STATUS, 0)
        bar = tqdm(total=len(variants), unit="variant", desc="score", disable=not config.progress,
                   file=sys.stderr, dynamic_ncols=True)
        with ScoreFiles(vcf_out, tsv_out, reference.contigs, scorer.names, STATUS, attrs, md5) as files, bar:
            pending: list[tuple[Variant, list]] = []
            jobs = []
            for v in variants:
                rows = []
                for alt in v.alts or (".",):  # a record without ALT is listed, unscored
                    status = _status(am, v, alt, window)
                    counts[status] += 1
                    job = scorer.job(v, alt.upper()) if status == "scored" else None
                    rows.append([alt, status, job, None])
                    if job is not None:
                        jobs.append((job, rows[-1]))
                pending.append((v, rows))
                if len(jobs) * scorer.windows_per_job >= batch:
                    _flush(scorer, jobs, pending, files, bar)
                    jobs, pending = [], []
            _flush(scorer, jobs, pending, files, bar)
    seconds = time.perf_counter() - started
    n_alleles = sum(counts.values())
    return {"vcf": str(vcf_out), "tsv": str(tsv_out), "task": am.task, "window": window, "records": len(variants),
            "alleles": n_alleles, "status": counts, "seconds": seconds,
            "variants_per_s": len(variants) / max(seconds, 1e-9)}


def _flush(scorer, jobs: list, pending: list, files: ScoreFiles, bar) -> None:
    if jobs:
        for (job, row), values in zip(jobs, scorer.scores([j for j, _ in jobs])):
            row[3] = values
    for v, rows in pending:
        files.write(v, [(alt, status, job, values) for alt, status, job, values in rows])
    bar.update(len(pending))
    raise_if_terminated()
