"""Which bases of a region make a model's prediction: in-silico mutagenesis and gradient x input.

The attributed quantity, per class c, is f_c: for per-base models (pattern, per-residue
classify) the sum over the region's bases of the probability `genoformer predict` writes for
them (its window grid: each base from the window that keeps it, windows of the model's size
overlapping by 2 x margin); for classify models, the class probability of the region's sequence.

ISM: f_c with base i changed to each other base x, minus f_c of the reference: ism [L, 4, C]
(0 at the reference base). The changed base keeps the reference base's case, so only its letter
changes, not the soft-mask bit the stem reads. Only what a change can alter is run again, in
batches: the windows that contain i (two per change at the default margin of window/4, one with
margin 0), and, in models whose every layer is local attention, only the blocks of tokens around
i, widened by the stem's and the decoder's receptive fields (`piece`).
gradient x input: the same [L, 4, C] to first order, from one backward pass per window and
class. A base enters the model twice: through the k-mer tokens that spell it and, with the
per-base stem (the default), as a one-hot letter the stem's convolutions read. The estimate is the
first-order change along both: the gradient of f_c by each token's embedding, dotted with the
change of that embedding when base i becomes x (the k-mer with x in i's place), summed over the
tokens covering i; plus the gradient of f_c by the stem's one-hot input at base i, letter x
minus the reference letter. Its mean over the alternatives is the gradient x input of a one-hot
encoding with the gradient centred over the four bases.
Per-base importance (bedGraph, logo): minus the mean over the three alternatives; positive where
the reference base raises f_c. Bases that are not A/C/G/T are not changed (0, `mutated` False).
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from genoformer.apply.model import (AppliedModel, Reach, embedding_table, input_gradients, local_reach,
                                    probabilities)
from genoformer.coords import Interval
from genoformer.interrupt import raise_if_terminated
from genoformer.predict.grid import Grid

ACGT = np.frombuffer(b"ACGT", np.uint8)
_UPPER = np.arange(256, dtype=np.uint8)
_UPPER[ord("a"):ord("z") + 1] -= 32
_LOWER = np.uint8(32)  # the bit that makes an ASCII letter lower case


@dataclass(frozen=True)
class Target:
    """One input whose outputs count towards f: a window (per-base models) or the region (classify)."""
    start: int  # 0-based contig position of bases[0]
    bases: np.ndarray  # uint8 ASCII, at most n_bases long
    n_bases: int  # the length the model is run at (the window; padding after the bases)
    weights: np.ndarray  # [n_bases, C] 1 at the region bases this input predicts (per-base); [C] ones (classify)


def targets(am: AppliedModel, reference, region: Interval, window: int, margin: int, step: int) -> list[Target]:
    """The inputs f sums over (see the module docstring)."""
    n_classes = len(am.classes)
    if not am.per_base:
        bases = reference.fetch(region.contig, region.start, region.end)
        return [Target(region.start, bases, len(region), np.ones(n_classes, np.float32))]
    g = Grid(window, margin, step, reference.contigs[region.contig])
    out = []
    for i in range(g.window_of(region.start), g.window_of(region.end - 1) + 1):
        w = g.to_window(region.contig, i)
        kept_start, kept_end = g.kept(i)
        a, b = max(kept_start, region.start), min(kept_end, region.end)
        weights = np.zeros((window, n_classes), np.float32)
        weights[a - w.start:b - w.start] = 1
        out.append(Target(w.start, reference.fetch(region.contig, w.start, w.valid_end), window, weights))
    return out


def changes(target: Target, region: Interval) -> Iterator[tuple[int, int]]:
    """(offset in target.bases, base code 0-3) of every change at a region base inside the target."""
    lo = max(region.start, target.start) - target.start
    hi = min(region.end, target.start + len(target.bases)) - target.start
    upper = _UPPER[target.bases]
    for o in range(lo, hi):
        for x in range(4):
            if upper[o] != ACGT[x] and upper[o] in ACGT:
                yield o, x


@dataclass(frozen=True)
class Piece:
    """What to run again for a change: bases [lo, hi) of a target; its outputs at [out_lo, out_hi) can differ."""
    lo: int
    hi: int
    out_lo: int
    out_hi: int


def piece(target: Target, offset: int, tokenizer, reach: Reach | None) -> Piece:
    """The smallest input that gives exactly the outputs a change at `offset` alters: the whole target, or
    with local attention only (model.local_reach) the blocks around it (block-aligned, so each block
    attends as it does in the whole window; positions enter attention only as differences), widened by
    what the stem reads and the decoder mixes (model.local_reach)."""
    n = len(target.bases)
    if reach is None:
        return Piece(0, n, 0, n)
    block, depth = reach.block, reach.depth
    k, stride, n_tokens = tokenizer.k, tokenizer.stride, tokenizer.n_tokens(n)

    def owned(token: int) -> int:  # the first base a token owns (tokenize.token_of_base)
        return 0 if token <= 0 else n if token >= n_tokens else min((token - 1) * stride + k, n)

    def owner(base: int) -> int:
        return 0 if base < k else (base - k) // stride + 1

    # what the change alters: the stem's features of bases [lo, hi], the tokens spelling them, the blocks
    # those reach through attention, the bases those tokens own, and the decoder's neighbours of all these
    lo, hi = max(offset - reach.stem, 0), min(offset + reach.stem, n - 1)
    first = min(max(0, -(-(lo - k + 1) // stride)), n_tokens - 1)
    last = min(hi // stride, n_tokens - 1)
    changed_end = min((last // block + depth + 1) * block, n_tokens)
    out_lo = max(min(owned(first // block * block), lo) - reach.decoder, 0)
    out_hi = min(max(owned(changed_end), hi + 1) + reach.decoder, n)
    # what those outputs read: the decoder's inputs around them (token states and stem features), the
    # blocks those token states attend to, and the bases the stem reads for all of them
    read_lo, read_hi = max(out_lo - reach.decoder, 0), min(out_hi + reach.decoder, n)
    tokens_lo = max((owner(read_lo) // block - depth) * block, 0)
    tokens_hi = min((owner(read_hi - 1) // block + 1) * block, n_tokens)
    # k bases more on the left: the first k bases of a piece are its first token's, not their owners'
    need_lo = max(min(tokens_lo * stride, read_lo - k) - reach.stem, 0)
    need_hi = min(max((tokens_hi - 1) * stride + k, read_hi) + reach.stem, n)
    run_lo = need_lo // stride // block * block  # the piece starts at a block of the whole target's tokens
    return Piece(run_lo * stride, need_hi, out_lo, out_hi)


def _weighted(weights: np.ndarray, probs: np.ndarray) -> np.ndarray:
    """[B, C] sums of `probs` ([B, n, C] per base, [B, C] per sequence) over weighted bases."""
    return (probs.astype(np.float64) * weights).reshape(len(probs), -1, probs.shape[-1]).sum(1)


def ism(am: AppliedModel, region: Interval, inputs: list[Target], batch_size: int,
        progress=None) -> tuple[np.ndarray, np.ndarray, int]:
    """(ism float32 [L, 4, C], f of the reference [C], bases run through the model);
    `progress(n)` is told of each batch of changes."""
    out = np.zeros((len(region), 4, len(am.classes)), np.float32)
    baseline = np.zeros(len(am.classes))
    reach = local_reach(am) if am.per_base else None
    bases_run = 0
    for t in inputs:
        baseline += _weighted(t.weights, probabilities(am, [t.bases], t.n_bases, what="attribution windows"))[0]
        groups: dict[Piece, list[tuple[int, int]]] = {}
        for o, x in changes(t, region):
            groups.setdefault(piece(t, o, am.tokenizer, reach), []).append((o, x))
        for p, todo in groups.items():
            n_bases = t.n_bases if reach is None else p.hi - p.lo
            weights = t.weights[p.lo:p.lo + n_bases].copy() if am.per_base else t.weights
            if am.per_base:
                weights[:p.out_lo - p.lo] = 0
                weights[p.out_hi - p.lo:] = 0
            if not weights.any():  # the change cannot reach a base f counts here
                if progress is not None:
                    progress(len(todo))
                continue
            reference = probabilities(am, [t.bases[p.lo:p.hi]], n_bases, what="attribution windows")
            for s in range(0, len(todo), batch_size):
                chunk = todo[s:s + batch_size]
                seqs = np.repeat(t.bases[None, p.lo:p.hi], len(chunk), 0)
                offsets = np.array([o for o, _ in chunk])
                # the changed base keeps the reference's case: its soft-mask bit, which the stem reads, stays
                seqs[np.arange(len(chunk)), offsets - p.lo] = ACGT[[x for _, x in chunk]] | (t.bases[offsets] & _LOWER)
                # differences per base before the sum: a sum of hundreds of probabilities would swamp them
                delta = _weighted(weights, probabilities(am, list(seqs), n_bases, what="attribution windows")
                                  - reference)
                np.add.at(out, (offsets + t.start - region.start, [x for _, x in chunk]), delta)
                bases_run += len(chunk) * (p.hi - p.lo)
                if progress is not None:
                    progress(len(chunk))
                raise_if_terminated()
    return out, baseline.astype(np.float32), bases_run


def taylor_changes(tokenizer, bases: np.ndarray, grads: np.ndarray, table: np.ndarray,
                   letter_grads: np.ndarray | None = None) -> np.ndarray:
    """float32 [n, 4, C]: first-order change of f when base i becomes A/C/G/T, from grads [C, T, d]
    (d f_c / d token embedding), the embedding table [V, d] and, with a stem, letter_grads [C, n, letters]
    (d f_c / d the stem's one-hot letters); n = len(bases)."""
    k, stride, n = tokenizer.k, tokenizer.stride, len(bases)
    n_tokens = tokenizer.n_tokens(n)
    starts = np.arange(n_tokens) * stride
    padded = np.concatenate([_UPPER[bases], np.full(k, ord("N"), np.uint8)])  # the last k-mer's N padding
    letters = padded[starts[:, None] + np.arange(k)]  # [T, k]
    kmers = type(tokenizer)(k, k)  # one token per k letters: the same ids
    ids = kmers.encode(letters.ravel())
    changed = np.repeat(letters[:, None, None, :], 4, 2).repeat(k, 1)  # [T, k (position), 4 (base), k]
    for j in range(k):
        changed[:, j, :, j] = ACGT
    changed_ids = kmers.encode(changed.ravel()).reshape(n_tokens, k, 4)
    g = grads[:, :n_tokens]
    s = np.einsum("ctd,tjxd->ctjx", g, table[changed_ids]) - np.einsum("ctd,td->ct", g, table[ids])[..., None, None]
    out = np.zeros((n, 4, g.shape[0]), np.float32)
    for j in range(k):
        o = starts + j
        keep = o < n
        np.add.at(out, o[keep], s[:, keep, j].transpose(1, 2, 0))
    if letter_grads is not None:  # the stem's one-hot input: letter x on, the reference's letter off
        codes = tokenizer.codes(bases).astype(np.int64)
        lg = letter_grads[:, :n].transpose(1, 0, 2)  # [n, C, letters]
        acgt = tokenizer.codes(ACGT).astype(np.int64)
        own = np.take_along_axis(lg, codes[:, None, None], 2)  # [n, C, 1]
        out += (lg[..., acgt] - own).transpose(0, 2, 1)
    return out


def grad_input(am: AppliedModel, region: Interval, inputs: list[Target]) -> np.ndarray:
    """The first-order estimate of ism: float32 [L, 4, C] (see the module docstring)."""
    out = np.zeros((len(region), 4, len(am.classes)), np.float32)
    table = embedding_table(am)
    for t in inputs:
        grads, letter_grads = input_gradients(am, t.bases, t.n_bases, t.weights)
        change = taylor_changes(am.tokenizer, t.bases, grads, table, letter_grads)
        lo, hi = max(region.start, t.start), min(region.end, t.start + len(t.bases))
        out[lo - region.start:hi - region.start] += change[lo - t.start:hi - t.start]
        raise_if_terminated()
    return out


def mutated(bases: np.ndarray) -> np.ndarray:
    """bool [L]: reference bases that are A, C, G or T (the others are not changed)."""
    return np.isin(_UPPER[bases], ACGT)


def importance(changes: np.ndarray, is_mutated: np.ndarray) -> np.ndarray:
    """[L, C]: minus the mean change over the three alternatives (0 where nothing was changed)."""
    return np.where(is_mutated[:, None], -changes.sum(1) / 3, 0).astype(np.float32)
