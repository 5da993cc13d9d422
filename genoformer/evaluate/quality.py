"""Do QUAL and GQ mean what they say? Reliability per GQ band, precision over QUAL, for `evaluate`.

Every scored call allele (evaluate.callsets) carries its record's QUAL and GQ:
- reliability: alleles grouped by GQ band (0-9, 10-19, ..., 90-99); predicted error = the mean of
  10^(-GQ/10); observed error = the share whose genotype is wrong (a false positive, or a true
  positive of the other zygosity). Both also as phred; `calibration_error` is the mean of
  |predicted - observed| phred over bands with at least MIN_BAND alleles (an observed error of 0
  counts as 0.5 errors, so its phred stays finite), and `calibration_error_points` the mean of
  |predicted - observed| error rate there, in percentage points (phred is the stricter: it weighs
  0.1 % against 0.01 % as much as 10 % against 1 %);
- precision-recall over QUAL: alleles sorted by QUAL, high first; at each distinct QUAL, the
  precision and recall of the alleles at or above it;
- QUAL deciles: alleles in ten equal groups by QUAL, low to high, and the precision of each
  (a QUAL that ranks calls gives precision rising over the deciles).
`write_report(prefix)` writes PREFIX.reliability.tsv and PREFIX.pr.tsv, and PREFIX.pr.png and
PREFIX.reliability.png when matplotlib is installed.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genoformer.evaluate.callsets import Allele
from genoformer.outputs import write_text

BANDS = tuple((lo, lo + 9) for lo in range(0, 100, 10))
MIN_BAND = 20
DECILES = 10


def phred_of(error: float) -> float:
    return -10 * math.log10(error) if error > 0 else math.inf


@dataclass
class QualityReport:
    reliability: list[dict]  # per GQ band: calls, predicted and observed error, both as phred
    pr: list[dict]  # per distinct QUAL, high to low: calls at or above, precision, recall
    deciles: list[dict]  # per QUAL decile, low to high: QUAL range, calls, precision
    calibration_error: float  # mean |predicted - observed| phred over bands with >= MIN_BAND calls
    calibration_error_points: float  # mean |predicted - observed| error rate there, percentage points

    def as_dict(self) -> dict:
        return {"reliability": self.reliability, "qual_deciles": self.deciles,
                "gq_calibration_error": self.calibration_error,
                "gq_calibration_error_points": self.calibration_error_points}

    def table(self) -> str:
        rows = [f"{'GQ band':<9}{'calls':>7}{'predicted error':>17}{'observed error':>16}{'predicted GQ':>14}"
                f"{'observed GQ':>13}"]
        for b in self.reliability:
            if b["calls"]:
                rows.append(f"{b['band']:<9}{b['calls']:>7}{b['predicted_error']:>17.4f}{b['observed_error']:>16.4f}"
                            f"{b['predicted_phred']:>14.1f}{b['observed_phred']:>13.1f}")
        rows.append(f"GQ calibration error (bands with >= {MIN_BAND} calls): "
                    + ("-" if math.isnan(self.calibration_error) else
                       f"{self.calibration_error:.1f} phred, {self.calibration_error_points:.2f} points of error rate"))
        rows.append("precision by QUAL decile (low to high): "
                    + " ".join("-" if math.isnan(d["precision"]) else f"{d['precision']:.3f}" for d in self.deciles))
        return "\n".join(rows)

    def write(self, prefix: str | Path) -> list[Path]:
        """PREFIX.reliability.tsv and PREFIX.pr.tsv (and PNGs where matplotlib is installed); their paths."""
        prefix = str(prefix)
        written = [write_text(f"{prefix}.reliability.tsv", _tsv(self.reliability)),
                   write_text(f"{prefix}.pr.tsv", _tsv(self.pr))]
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return written
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot([r["recall"] for r in self.pr], [r["precision"] for r in self.pr], drawstyle="steps-post")
        ax.set(xlabel="recall", ylabel="precision", title="precision-recall over QUAL", xlim=(0, 1), ylim=(0, 1.02))
        fig.tight_layout()
        fig.savefig(f"{prefix}.pr.png", dpi=100)
        plt.close(fig)
        used = [b for b in self.reliability if b["calls"]]
        fig, ax = plt.subplots(figsize=(4, 4))
        ax.plot([0, 60], [0, 60], color="grey", lw=0.8)
        ax.scatter([min(b["predicted_phred"], 60) for b in used], [min(b["observed_phred"], 60) for b in used],
                   s=[10 + 2 * math.sqrt(b["calls"]) for b in used])
        ax.set(xlabel="predicted GQ (phred)", ylabel="observed (phred)", title="GQ reliability")
        fig.tight_layout()
        fig.savefig(f"{prefix}.reliability.png", dpi=100)
        plt.close(fig)
        return written + [Path(f"{prefix}.pr.png"), Path(f"{prefix}.reliability.png")]


def _tsv(rows: list[dict]) -> str:
    if not rows:
        return ""
    keys = list(rows[0])
    return "\t".join(keys) + "\n" + "".join("\t".join(str(r[k]) for k in keys) + "\n" for r in rows)


def quality_report(calls: Mapping[Allele, str], quality: Mapping[Allele, tuple], truth: Mapping[Allele, str]
                   ) -> QualityReport | None:
    """The report over the call alleles that have a QUAL and a GQ; None when none has."""
    scored = [(a, *quality[a]) for a in calls if quality.get(a, (None, None))[0] is not None
              and quality[a][1] is not None]
    if not scored:
        return None
    qual = np.array([q for _, q, _ in scored], dtype=np.float64)
    gq = np.array([g for _, _, g in scored], dtype=np.float64)
    true = np.array([a in truth for a, _, _ in scored])
    right = np.array([a in truth and truth[a] == calls[a] for a, _, _ in scored])
    bands = _reliability(gq, right)
    return QualityReport(bands, _pr(qual, true, len(truth)), _deciles(qual, true), *_calibration_errors(bands))


def _reliability(gq: np.ndarray, right: np.ndarray) -> list[dict]:
    out = []
    for lo, hi in BANDS:
        inside = (gq >= lo) & (gq <= hi)
        n = int(inside.sum())
        predicted = float(np.mean(10 ** (-gq[inside] / 10))) if n else math.nan
        wrong = int((~right[inside]).sum())
        observed = wrong / n if n else math.nan
        out.append({"band": f"{lo}-{hi}", "calls": n, "wrong": wrong, "predicted_error": predicted,
                    "observed_error": observed, "predicted_phred": phred_of(predicted) if n else math.nan,
                    "observed_phred": phred_of(max(wrong, 0.5) / n) if n else math.nan})
    return out


def _calibration_errors(bands: list[dict]) -> tuple[float, float]:
    """(mean |predicted - observed| phred, the same in percentage points of error rate) over the bands with
    at least MIN_BAND calls."""
    used = [b for b in bands if b["calls"] >= MIN_BAND]
    if not used:
        return math.nan, math.nan
    return (float(np.mean([abs(b["predicted_phred"] - b["observed_phred"]) for b in used])),
            float(np.mean([100 * abs(b["predicted_error"] - b["observed_error"]) for b in used])))


def _pr(qual: np.ndarray, true: np.ndarray, n_truth: int) -> list[dict]:
    order = np.argsort(-qual, kind="stable")
    q, t = qual[order], true[order]
    tp, calls = np.cumsum(t), np.arange(1, len(t) + 1)
    last = np.flatnonzero(np.r_[q[1:] != q[:-1], True])  # the last call of each distinct QUAL
    return [{"qual": float(q[i]), "calls": int(calls[i]), "precision": float(tp[i] / calls[i]),
             "recall": float(tp[i] / n_truth) if n_truth else math.nan} for i in last]


def _deciles(qual: np.ndarray, true: np.ndarray) -> list[dict]:
    order = np.argsort(qual, kind="stable")
    out = []
    for part in np.array_split(order, DECILES):
        out.append({"qual_min": float(qual[part].min()) if len(part) else math.nan,
                    "qual_max": float(qual[part].max()) if len(part) else math.nan, "calls": int(len(part)),
                    "precision": float(true[part].mean()) if len(part) else math.nan})
    return out
