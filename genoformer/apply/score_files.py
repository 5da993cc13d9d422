"""The two files of `genoformer score-variants`: a sites-only VCF (bgzipped + tabix) and a TSV.

VCF: CHROM, POS, ID, REF, ALT as in the input; QUAL and FILTER missing; INFO GF_STATUS (one per
ALT: `scored` or why not) and one Number=A float per score and class, named GF_<SCORE>_<CLASS>
(class names made into valid INFO keys), each declared in the header, with ##contig lines of
the reference and ##genoformer_* lines of provenance. A score of an unscored allele is '.'.
TSV: one row per ALT allele: chrom, pos (the VCF's, 1-based), id, ref, alt, status, ref_window
(the reference window, samtools-style 1-based) and the scores, named as the scorer names them.
Annotate the input VCF with them: bcftools annotate -a OUT.vcf.gz -c INFO input.vcf.gz
"""
from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from genoformer.apply.vcf import Variant
from genoformer.outputs import staged, staged_text

_INFO_KEY = re.compile(r"[^0-9A-Za-z_.]")
_DESCRIPTIONS = {"diff": "p_alt - p_ref of class {c} (allele mean, or window sum with --aggregate window)",
                 "lor": "log-odds ratio logit(p_alt) - logit(p_ref) of class {c}",
                 "llr": "zero-shot log-likelihood ratio log P(alt) - log P(ref) of the masked tokens (mlm)"}


def info_keys(names: list[str]) -> list[str]:
    """INFO keys of the score names: diff_<class> -> GF_DIFF_<class>, lor_<class> -> GF_LOR_<class>,
    llr -> GF_LLR; characters a key cannot hold become '_', and a clash gets a trailing '_'."""
    keys: list[str] = []
    for name in names:
        score, _, cls = name.partition("_")
        key = f"GF_{score.upper()}" + (f"_{_INFO_KEY.sub('_', cls)}" if cls else "")
        while key in keys:
            key += "_"
        keys.append(key)
    return keys


def _number(value: float) -> str:
    return f"{value:.6g}"


class ScoreFiles:
    """Context manager: both files staged on enter, published on a clean exit, removed on any error."""

    def __init__(self, vcf: Path, tsv: Path, contigs: Mapping[str, int], names: list[str], status: dict[str, str],
                 attrs: Mapping[str, object], md5: Mapping[str, str]):
        self.vcf_path, self.tsv_path, self.names = vcf, tsv, names
        self.keys = info_keys(names)
        self.header = self._vcf_header(contigs, status, attrs, md5)
        self._stack = contextlib.ExitStack()

    def _vcf_header(self, contigs, status, attrs, md5) -> str:
        lines = ["##fileformat=VCFv4.2", f"##source=genoformer score-variants {attrs['genoformer_version']}",
                 f"##reference=file://{attrs['reference']}"]
        for key in ("model_path", "model_sha256", "window", "hash_seed", "command", "config", "created"):
            lines.append(f"##genoformer_{key}={json.dumps(attrs[key]) if key == 'config' else attrs[key]}")
        lines.append(f"##genoformer_score_keys={json.dumps(dict(zip(self.keys, self.names)))}")
        for name, length in contigs.items():
            extra = f",md5={md5[name]}" if name in md5 else ""
            lines.append(f"##contig=<ID={name},length={length}{extra}>")
        codes = "; ".join(f"{code}: {text}" for code, text in status.items()).replace('"', "'")
        lines.append(f'##INFO=<ID=GF_STATUS,Number=A,Type=String,Description="genoformer: {codes}">')
        for key, name in zip(self.keys, self.names):
            score, _, cls = name.partition("_")
            text = _DESCRIPTIONS[score].format(c=cls).replace('"', "'")
            lines.append(f'##INFO=<ID={key},Number=A,Type=Float,Description="genoformer: {text}">')
        return "\n".join(lines + ["\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO"])]) + "\n"

    def __enter__(self) -> ScoreFiles:
        with contextlib.ExitStack() as stack:
            tsv_tmp = stack.enter_context(staged(self.tsv_path))
            vcf_tmp = stack.enter_context(staged_text(self.vcf_path, "vcf", ".vcf"))
            self._tsv = stack.enter_context(open(tsv_tmp, "w"))
            self._vcf = stack.enter_context(open(vcf_tmp, "w"))
            self._stack = stack.pop_all()
        self._vcf.write(self.header)
        self._tsv.write("\t".join(["chrom", "pos", "id", "ref", "alt", "status", "ref_window", *self.names]) + "\n")
        return self

    def __exit__(self, *exc) -> bool:
        return self._stack.__exit__(*exc)

    def write(self, v: Variant, alleles: list[tuple[str, str, object, np.ndarray | None]]) -> None:
        """One record: (alt, status, job or None, scores or None) per ALT allele."""
        alts = ",".join(alt for alt, _, _, _ in alleles)
        info = ["GF_STATUS=" + ",".join(status for _, status, _, _ in alleles)]
        for i, key in enumerate(self.keys):
            values = [_number(s[i]) if s is not None else "." for _, _, _, s in alleles]
            if any(x != "." for x in values):
                info.append(f"{key}={','.join(values)}")
        if alts == ".":  # no ALT allele: Number=A fields have no value to hold; the TSV says why
            info = ["."]
        self._vcf.write("\t".join([v.contig, str(v.vcf_pos), v.id, v.ref, alts, ".", ".", ";".join(info)]) + "\n")
        for alt, status, job, scores in alleles:
            window = f"{v.contig}:{job.ref.start + 1}-{job.ref.start + len(job.ref.bases)}" if job else "."
            cells = [_number(x) for x in scores] if scores is not None else [""] * len(self.names)
            self._tsv.write("\t".join([v.contig, str(v.vcf_pos), v.id, v.ref, alt, status, window, *cells]) + "\n")
