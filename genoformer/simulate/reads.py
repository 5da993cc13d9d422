"""Paired reads for a simulated example: sampled from the two haplotypes, with their true alignments
(except near indels, where a local aligner would align them otherwise).

Fragments are drawn uniformly from each haplotype with length ~ Normal(insert_mean, insert_sd);
read 1 is on the forward strand for half of them (an FR library).  Qualities decay along the
read and each base is substituted with probability 10^(-Q/10).  Alignments come from the
haplotype -> reference coordinate map rather than an aligner, except where a read ends close to
an indel: there it is aligned as a local aligner (BWA-MEM's scores) would, without the indel and
soft-clipped where it stops matching, whenever that scores higher. In real reads an insertion in a
repeat shows only in the reads that span the repeat: NA12878's het insertions on chr20:10.0-10.1 Mb
show in 27-47 % of the reads (median 38 %), not in the half that true alignments give.  Fragments
touching N are skipped.  Two artefacts are planted (PARALOG_*, STRAND_ERROR*): a diverged paralog's
reads mapped at low MAPQ onto stretches of the contig, and strand-specific systematic errors.
"""
from __future__ import annotations

import array
from itertools import groupby
from pathlib import Path

import numpy as np
import pysam

from genoformer import __version__
from genoformer.interrupt import raise_if_terminated

MAPQ = 60
# artefacts of real reads a caller must learn to ignore, as the false SNVs of a model trained without them show
# (NA12878 chr20: alt reads on one strand only, or at low MAPQ): stretches of each contig (PARALOG_SHARE of it)
# whose diverged paralog's reads (PARALOG_DEPTH of the stretch's depth) map onto them at low MAPQ, and positions
# where a share of the reads of one strand read a wrong base (systematic, strand-specific sequencing errors).
# Their rates give ~2-3 artefact sites per 10 kb, as many as `bcftools call` makes false SNVs per 10 kb on
# NA12878's chr20:10.0-10.1 Mb (18 in 100 kb)
PARALOG_SHARE, PARALOG_STRETCH, PARALOG_DIVERGENCE, PARALOG_DEPTH, PARALOG_MAPQ = 0.02, (1_000, 3_000), 0.01, 0.3, (0, 30)
STRAND_ERROR_RATE, STRAND_ERROR = 1 / 10_000, (0.2, 0.5)
# BWA-MEM's default scores: a local alignment keeps an indel only when the bases past it pay for the gap
MATCH, GAP_OPEN, GAP_EXTEND, CLIP = 1, 6, 1, 5

ACGT = np.frombuffer(b"ACGT", dtype=np.uint8)
INDEX = np.zeros(256, dtype=np.uint8)  # ASCII base -> 0-3 in ACGT order, either case
INDEX[ACGT], INDEX[ACGT | 0x20] = np.arange(4), np.arange(4)
UPPER = np.arange(256, dtype=np.uint8)
UPPER[ord("a"):ord("z") + 1] -= 0x20


def substitute(rng: np.random.Generator, seq: np.ndarray, rate) -> np.ndarray:
    """Copy of uppercase `seq` with each base changed to one of the other three with prob `rate`."""
    out = seq.copy()
    flat = out.reshape(-1)
    hit = np.flatnonzero(rng.random(seq.shape).reshape(-1) < np.asarray(rate).reshape(-1))
    flat[hit] = ACGT[(INDEX[flat[hit]] + rng.integers(1, 4, hit.size)) % 4]
    return out


def _haplotype(upper: np.ndarray, variants, hap: int) -> tuple[np.ndarray, np.ndarray]:
    """Haplotype sequence and, per base, its reference position (-1 for inserted bases)."""
    seqs, ref_pos, prev = [], [], 0
    for pos, ref, alt, gt in variants:
        if gt[hap]:
            seqs += [upper[prev:pos], np.frombuffer(alt.encode(), np.uint8)]
            ref_pos += [np.arange(prev, pos + 1), np.full(len(alt) - 1, -1)]
            prev = pos + len(ref)
    seqs.append(upper[prev:])
    ref_pos.append(np.arange(prev, upper.size))
    return np.concatenate(seqs), np.concatenate(ref_pos)


def _qualities(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    """Illumina-like Phred scores in sequencing order: ~38 at the start, decaying to ~26."""
    q = (38 - 12 * np.linspace(0, 1, length) ** 2 + rng.normal(0, 2, (n, 1))
         + rng.normal(0, 3, (n, length)))
    low = rng.random((n, length)) < 0.005
    q[low] = rng.integers(2, 13, int(low.sum()))
    return np.clip(np.rint(q), 2, 41).astype(np.uint8)


def _cigar(ref_pos: np.ndarray) -> tuple[str, int, int]:
    """True alignment of a read from its bases' reference positions: CIGAR, start, end."""
    mapped = np.flatnonzero(ref_pos >= 0)
    first, last = int(mapped[0]), int(mapped[-1])
    ops, prev = ["S"] * first, int(ref_pos[first]) - 1
    for r in ref_pos[first:last + 1].tolist():
        if r < 0:
            ops.append("I")
        else:
            ops += ["D"] * (r - prev - 1) + ["M"]
            prev = r
    ops += ["S"] * (ref_pos.size - 1 - last)
    cigar = "".join(f"{len(list(run))}{op}" for op, run in groupby(ops))
    return cigar, int(ref_pos[first]), prev + 1


def _local(ref_pos: np.ndarray, bases: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """`ref_pos` of a read (its error-free `bases`) crossing one indel, realigned as a local aligner
    would: the true alignment, or the read aligned straight on past the indel (or before it) as far
    as it matches the reference `upper`, the rest soft-clipped (-1), whichever scores higher."""
    mapped = ref_pos >= 0
    if not mapped[0] or not mapped[-1]:
        return ref_pos  # starts or ends inside an insertion: soft-clipped there already
    breaks = np.flatnonzero(mapped[1:] != mapped[:-1])  # edges of inserted runs
    jumps = np.flatnonzero(mapped[1:] & mapped[:-1] & (np.diff(ref_pos) != 1))  # deletions
    if len(breaks) + 2 * len(jumps) != 2:
        return ref_pos  # no indel inside the read, or several: the true alignment
    a = int(breaks[0] if len(breaks) else jumps[0]) + 1  # first base after the left part
    b = int(breaks[1]) + 1 if len(breaks) else a  # first base of the right part (b > a: inserted bases)
    p, q = int(ref_pos[a - 1]), int(ref_pos[b])
    if b > a and q != p + 1:
        return ref_pos
    n = ref_pos.size
    length = b - a if b > a else q - p - 1
    scores = {"true": MATCH * (n - (b - a)) - GAP_OPEN - GAP_EXTEND * length}
    # straight on past the indel: bases a.. against the reference after p
    right = min(n - a, upper.size - p - 1)
    m_right = int(np.argmin(np.append(bases[a:a + right] == upper[p + 1:p + 1 + right], False)))
    scores["right"] = MATCH * (a + m_right) - CLIP * (a + m_right < n)
    # straight back before it: bases ..b-1 against the reference before q
    left = min(b, q)
    m_left = int(np.argmin(np.append(bases[b - left:b][::-1] == upper[q - left:q][::-1], False)))
    scores["left"] = MATCH * (n - b + m_left) - CLIP * (m_left < b)
    best = max(scores, key=lambda k: (scores[k], k == "true"))
    out = ref_pos.copy()
    if best == "right":
        out[a:] = -1
        out[a:a + m_right] = p + 1 + np.arange(m_right)
    elif best == "left":
        out[:b] = -1
        out[b - m_left:b] = q - m_left + np.arange(m_left)
    return out


def _align(hap_ref: np.ndarray, breaks: np.ndarray, starts: np.ndarray, length: int, seq: np.ndarray,
           upper: np.ndarray):
    """Reference start, end and CIGAR of the reads covering hap[starts:starts+length] (haplotype `seq`
    of reference `upper`)."""
    simple = (breaks[starts + length - 1] == breaks[starts]) & (hap_ref[starts] >= 0)
    pos = hap_ref[starts].copy()
    end = pos + length
    cigars = np.full(starts.size, f"{length}M", dtype=object)
    for i in np.flatnonzero(~simple).tolist():
        at = slice(starts[i], starts[i] + length)
        cigars[i], pos[i], end[i] = _cigar(_local(hap_ref[at], seq[at], upper))
    return pos, end, cigars


def _fragments(rng: np.random.Generator, seq: np.ndarray, n: int, p: dict,
               stretches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end of `n` fragments of `seq`, each inside one of `stretches` ([k, 2] start, end; drawn by
    length), length ~ Normal(insert_mean, insert_sd) cut to it; fragments touching N are dropped."""
    lengths = stretches[:, 1] - stretches[:, 0]
    where = stretches[rng.choice(len(stretches), n, p=lengths / lengths.sum())]
    frag = np.rint(rng.normal(p["insert_mean"], p["insert_sd"], n))
    frag = np.clip(frag, p["read_length"], where[:, 1] - where[:, 0]).astype(np.int64)
    start = where[:, 0] + (rng.random(n) * (where[:, 1] - where[:, 0] - frag + 1)).astype(np.int64)
    n_before = np.concatenate([[0], np.cumsum(seq == ord("N"))])
    keep = n_before[start + frag] == n_before[start]
    return start[keep], (start + frag)[keep]


def _read_pairs(rng: np.random.Generator, seq: np.ndarray, hap_ref: np.ndarray, upper: np.ndarray,
                start: np.ndarray, end: np.ndarray, R: int, name: str, source: int, mapq: tuple[int, int]) -> dict:
    """The read pairs of fragments [start, end) of haplotype `seq` (reference positions `hap_ref`) as columns;
    MAPQ drawn uniformly from `mapq` (inclusive) for each pair."""
    n = start.size
    # rows 0..n-1: forward reads; rows n..2n-1: their mates, as stored (reverse-complemented)
    hap_start, is_fwd = np.concatenate([start, end - R]), np.arange(2 * n) < n
    breaks = np.concatenate([[0], np.cumsum(np.diff(hap_ref) != 1)])
    pos, ref_end, cigar = _align(hap_ref, breaks, hap_start, R, seq, upper)
    qual = _qualities(rng, 2 * n, R)
    qual[n:] = qual[n:, ::-1]
    # error probability 10^(-Q/10); qual is uint8, so divide by -10 rather than negate it
    bases = substitute(rng, seq[hap_start[:, None] + np.arange(R)], 10.0 ** (qual / -10.0))
    mate = np.roll(pos, n)
    span = np.maximum(ref_end, np.roll(ref_end, n)) - np.minimum(pos, mate)
    read1 = is_fwd == np.tile(rng.random(n) < 0.5, 2)  # FR library: read 1 on either strand
    k = np.tile(np.arange(n), 2)
    return dict(
        name=np.array([f"{name}_{i}" for i in k.tolist()], dtype=object),
        flag=0x1 | 0x2 | np.where(is_fwd, 0x20, 0x10) | np.where(read1, 0x40, 0x80),
        pos=pos, mate=mate, tlen=np.where((pos < mate) | ((pos == mate) & is_fwd), span, -span),
        cigar=cigar, bases=bases, qual=qual, frag=k + (source << 32),
        mapq=np.tile(rng.integers(mapq[0], mapq[1] + 1, n), 2))


def _paralog(rng: np.random.Generator, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(a paralog of the contig: its PARALOG_SHARE in stretches with fixed differences, the stretches [k, 2])."""
    mean = sum(PARALOG_STRETCH) / 2
    n = round(PARALOG_SHARE * upper.size / mean)  # none on a contig under half a stretch's worth: one would
    # put 3-10 % of a 30 kb contig in a paralog, several times the share
    length = rng.integers(*PARALOG_STRETCH, n).clip(max=upper.size)
    start = (rng.random(n) * (upper.size - length + 1)).astype(np.int64)
    stretches = np.stack([start, start + length], axis=1)
    paralog = upper.copy()
    for s, e in stretches.tolist():
        diverged = substitute(rng, upper[s:e], PARALOG_DIVERGENCE)
        paralog[s:e] = np.where(upper[s:e] == ord("N"), upper[s:e], diverged)
    return paralog, stretches


def _strand_errors(rng: np.random.Generator, reads: dict, size: int, R: int) -> None:
    """At STRAND_ERROR_RATE of the positions, a share STRAND_ERROR of the reads of one strand read one wrong
    base there (in place, reads sorted by position; reads with an indel or a clip are left alone)."""
    sites = np.sort(rng.choice(size, rng.binomial(size, STRAND_ERROR_RATE), replace=False))
    reverse = rng.random(sites.size) < 0.5
    rate = rng.uniform(*STRAND_ERROR, sites.size)
    shift = rng.integers(1, 4, sites.size)
    simple = reads["cigar"] == f"{R}M"
    on_reverse = (reads["flag"] & 0x10) > 0
    for site, rev, r, k in zip(sites.tolist(), reverse.tolist(), rate.tolist(), shift.tolist()):
        lo, hi = np.searchsorted(reads["pos"], [site - R + 1, site + 1])
        hit = lo + np.flatnonzero(simple[lo:hi] & (on_reverse[lo:hi] == rev) & (rng.random(hi - lo) < r))
        for i in hit.tolist():
            b = reads["bases"][i, site - reads["pos"][i]]
            if b != ord("N"):
                reads["bases"][i, site - reads["pos"][i]] = ACGT[(INDEX[b] + k) % 4]


def _pairs(rng: np.random.Generator, upper: np.ndarray, variants, p: dict, name: str):
    """All reads of one contig as columns, sorted by reference start."""
    R, cols = p["read_length"], []
    for hap in (0, 1):
        seq, hap_ref = _haplotype(upper, variants, hap)
        n = round(p["coverage"] * upper.size / (4 * R))  # pairs: 2 haplotypes, 2 reads a pair
        start, end = _fragments(rng, seq, n, p, np.array([[0, seq.size]]))
        cols.append(_read_pairs(rng, seq, hap_ref, upper, start, end, R, f"{name}_h{hap + 1}", hap, (MAPQ, MAPQ)))
    paralog, stretches = _paralog(rng, upper)
    n = round(PARALOG_DEPTH * p["coverage"] * int((stretches[:, 1] - stretches[:, 0]).sum()) / (2 * R))
    if n:
        start, end = _fragments(rng, paralog, n, p, stretches)
        cols.append(_read_pairs(rng, paralog, np.arange(upper.size), upper, start, end, R, f"{name}_paralog", 2,
                                PARALOG_MAPQ))
    reads = {key: np.concatenate([c[key] for c in cols]) for key in cols[0]}
    order = np.lexsort((reads["flag"], reads["frag"], reads["pos"]))
    reads = {key: v[order] for key, v in reads.items()}
    _strand_errors(rng, reads, upper.size, R)
    return reads


def write_bam(path: Path, rng: np.random.Generator, seqs: dict[str, np.ndarray], variants, p: dict, *,
              sample: str, command_line: str) -> int:
    """Write the reads of every contig, coordinate-sorted and indexed; return the number of pairs."""
    header = pysam.AlignmentHeader.from_dict({
        "HD": {"VN": "1.6", "SO": "coordinate"},
        "SQ": [{"SN": name, "LN": int(seq.size)} for name, seq in seqs.items()],
        "RG": [{"ID": sample, "SM": sample, "PL": "ILLUMINA", "LB": f"{sample}-lib"}],
        "PG": [{"ID": "genoformer", "PN": "genoformer", "VN": __version__,
                "CL": command_line}]})
    n_reads = 0
    with pysam.AlignmentFile(str(path), "wb", header=header) as bam:
        for tid, (name, seq) in enumerate(seqs.items()):
            reads = _pairs(rng, UPPER[seq], [v[1:] for v in variants if v[0] == name], p, name)
            for i in range(reads["pos"].size):
                if not i % 10_000:
                    raise_if_terminated()
                a = pysam.AlignedSegment(header)
                a.query_name, a.flag = reads["name"][i], int(reads["flag"][i])
                a.reference_id, a.reference_start = tid, int(reads["pos"][i])
                a.mapping_quality, a.cigarstring = int(reads["mapq"][i]), reads["cigar"][i]
                a.next_reference_id, a.next_reference_start = tid, int(reads["mate"][i])
                a.template_length = int(reads["tlen"][i])
                a.query_sequence = reads["bases"][i].tobytes().decode("ascii")
                a.query_qualities = array.array("B", reads["qual"][i].tobytes())
                a.set_tag("RG", sample)
                bam.write(a)
            n_reads += reads["pos"].size
    pysam.index(str(path))
    return n_reads // 2
