"""Scores of one ALT allele against REF, per kind of model (see variants.py for the definitions).

Each scorer turns an allele pair into a job (the windows to run) and a batch of jobs into their
score vectors, so the driver can batch windows of many variants into one forward pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from genoformer.apply.model import AppliedModel, masked_letter_log_probs, masked_log_probs, probabilities
from genoformer.apply.vcf import Variant
from genoformer.apply.windows import AlleleWindow, allele_window, differing
from genoformer.tokenize import reverse_complement

EPS = 1e-6  # probabilities are clipped to [EPS, 1 - EPS] before a logit


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


@dataclass
class Job:
    ref: AlleleWindow
    alt: AlleleWindow
    seqs: list[np.ndarray] = field(default_factory=list)  # windows to run, in the scorer's order
    extra: dict = field(default_factory=dict)


class WindowScorer:
    """Per-base models (pattern, per-residue classify) and classify models: diff and lor per class."""

    def __init__(self, am: AppliedModel, reference, window: int, aggregate: str, rc_average: bool):
        self.am, self.reference, self.window = am, reference, window
        self.aggregate, self.rc = aggregate, rc_average
        self.names = [f"diff_{c}" for c in am.classes] + [f"lor_{c}" for c in am.classes]
        self.windows_per_job = 4 if rc_average else 2

    def job(self, v: Variant, alt: str) -> Job:
        ref_w = allele_window(self.reference, v.contig, v.pos, len(v.ref), v.ref, self.window)
        alt_w = allele_window(self.reference, v.contig, v.pos, len(v.ref), alt, self.window)
        seqs = [ref_w.bases, alt_w.bases]
        if self.rc:
            seqs += [reverse_complement(ref_w.bases), reverse_complement(alt_w.bases)]
        return Job(ref_w, alt_w, seqs)

    def scores(self, jobs: list[Job]) -> list[np.ndarray]:
        probs = probabilities(self.am, [s for j in jobs for s in j.seqs], self.window, what="variant windows")
        out = []
        for i, j in enumerate(jobs):
            got = probs[i * self.windows_per_job:(i + 1) * self.windows_per_job]
            ref, alt = self._summary(got[0], j.ref, got[2] if self.rc else None), \
                self._summary(got[1], j.alt, got[3] if self.rc else None)
            (ref_total, ref_mean), (alt_total, alt_mean) = ref, alt
            out.append(np.concatenate([alt_total - ref_total, _logit(alt_mean) - _logit(ref_mean)]))
        return out

    def _summary(self, probs: np.ndarray, w: AlleleWindow, rc: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """(the diff's term, the mean for lor) of one window: [C] each."""
        if not self.am.per_base:  # one probability vector per window
            p = probs if rc is None else (probs + rc) / 2
            return p, p
        n = len(w.bases)
        p = probs[:n] if rc is None else (probs[:n] + rc[:n][::-1]) / 2  # rc base i is forward base n-1-i
        if self.aggregate == "window":
            return p.sum(0), p.mean(0)
        mean = p[w.allele].mean(0)
        return mean, mean


class MlmScorer:
    """mlm models: llr, the masked zero-shot log-likelihood ratio; substitutions only.

    Per-base mlm (letters): the bases where ALT differs are hidden (N to the stem, every token spelling
    one [MASK]) and llr sums log P(ALT's letter) - log P(REF's letter) over them. Token-level mlm: the
    tokens covering those bases are masked and llr sums log P(ALT's k-mer) - log P(REF's k-mer) over them.
    """

    names = ["llr"]

    def __init__(self, am: AppliedModel, reference, window: int, rc_average: bool):
        self.am, self.reference, self.window, self.rc = am, reference, window, rc_average
        tok = am.tokenizer
        self.starts = np.arange(tok.n_tokens(window)) * tok.stride
        self.k = tok.k
        self.windows_per_job = 2 if rc_average else 1

    def _masked(self, offsets: np.ndarray) -> np.ndarray:
        """bool [T]: the tokens covering any of the base offsets."""
        return ((self.starts[:, None] <= offsets) & (offsets < self.starts[:, None] + self.k)).any(1)

    def _strand(self, ref_bases: np.ndarray, alt_bases: np.ndarray, offsets: np.ndarray) -> dict:
        tok = self.am.tokenizer
        if self.am.letters_mlm:
            hidden = np.zeros(self.window, dtype=bool)
            hidden[offsets] = True
            return {"bases": ref_bases, "hidden": hidden, "offsets": offsets,
                    "ref": tok.codes(ref_bases)[offsets], "alt": tok.codes(alt_bases)[offsets]}
        ids = np.full((len(self.starts), 2), tok.pad_id, dtype=np.int64)
        for col, bases in enumerate((ref_bases, alt_bases)):
            encoded = tok.encode(bases)
            ids[:encoded.size, col] = encoded
        return {"bases": ref_bases, "masked": self._masked(offsets), "ids": ids}

    def job(self, v: Variant, alt: str) -> Job:
        ref_w = allele_window(self.reference, v.contig, v.pos, len(v.ref), v.ref, self.window)
        alt_w = allele_window(self.reference, v.contig, v.pos, len(v.ref), alt, self.window)
        offsets = ref_w.allele_start + differing(v.ref, alt.upper())
        strands = [self._strand(ref_w.bases, alt_w.bases, offsets)]
        if self.rc:
            n = len(ref_w.bases)
            strands.append(self._strand(reverse_complement(ref_w.bases), reverse_complement(alt_w.bases),
                                        n - 1 - offsets))
        return Job(ref_w, alt_w, [s["bases"] for s in strands], {"strands": strands})

    def scores(self, jobs: list[Job]) -> list[np.ndarray]:
        strands = [s for j in jobs for s in j.extra["strands"]]
        seqs = [s["bases"] for s in strands]
        if self.am.letters_mlm:
            log_probs = masked_letter_log_probs(self.am, seqs, self.window, np.stack([s["hidden"] for s in strands]))
            llr = np.array([(lp[s["offsets"], s["alt"]] - lp[s["offsets"], s["ref"]]).sum()
                            for lp, s in zip(log_probs, strands)])
        else:
            masked = np.stack([s["masked"] for s in strands])
            picked = masked_log_probs(self.am, seqs, self.window, masked, np.stack([s["ids"] for s in strands]))
            llr = ((picked[..., 1] - picked[..., 0]) * masked).sum(1)  # picked: [N, T, (ref, alt)]
        return [np.array([llr[i * self.windows_per_job:(i + 1) * self.windows_per_job].mean()])
                for i in range(len(jobs))]
