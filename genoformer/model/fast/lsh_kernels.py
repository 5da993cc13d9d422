"""The memory-efficient LSH chunk attention kernel: a speed and memory trick, not a different function.

It computes what model/lsh.py's plain reference `chunk_attention` computes (chunks of the hash
order attending to their window, lsh_chunks.py, rounds combined by log-sum-exp) but never
materialises all rounds or all chunks at once: a custom autograd Function keeps only q, k, v,
the sort order, the output and the per-query log-sum-exp (as flash attention does) and recomputes
chunk scores in backward, one block of BLOCK_ROWS queries of one round at a time.  Peak memory is
O(T * d) for one (sequence, head) piece plus one block's [BLOCK_ROWS, 2 * bucket_size] scores.
On CPU, chunks go through torch's fused flash-attention kernels (exact, about twice as fast as
bmm + softmax); on a GPU through batched matmuls and a log-sum-exp, in the large pieces and blocks
of sizing.py (a few launches per round rather than thousands).  Adapted from the Reformer paper
(https://openreview.net/pdf?id=rkgNKkHtvB), trax and reformer-pytorch.

`chunk_attention` is the autograd entry (the Reformer gives it to its LSH layers);
attention_forward / attention_backward are the no-autograd halves the fast engine calls by hand.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..lsh_chunks import SELF_SCORE, last_chunk, looks_back
from ..sizing import piece_size, small_pieces
from .workspace import Workspace

KERNEL_SCOPE = "lsh_kernel."  # the prefix of the kernel's buffers in a workspace it is given
BLOCK_ROWS = 2 ** 13  # query rows per attention call: per-block buffers of a few MB, served from the heap
LARGE_BLOCK_ROWS = 2 ** 19  # on an accelerator (sizing.py): [rows, 2 * 64] float32 scores of 256 MiB


def _overlapping(runs: Tensor) -> Tensor:
    """Windows [N, nb, 2bs, ...] over contiguous runs [N, nb + 1, bs, ...]: each chunk with the one before it."""
    N, n1, bs = runs.shape[:3]
    inner = runs.stride(2)
    rest = runs.shape[3:]
    return runs.as_strided((N, n1 - 1, 2 * bs, *rest), (runs.stride(0), bs * inner, inner, *runs.stride()[3:]),
                           runs.storage_offset())


class _Round:
    """One round's sort order cut into chunks of bucket_size, each seen with the chunk it looks back to.

    rows [N, T]: global row ids (into [N * T]) in sorted order.  Chunk c's window is chunk c - 1
    then chunk c; the first chunk's is `lookback` (lsh_chunks.last_chunk of its sequence) then chunk
    0, masked by _bias where lsh_chunks.looks_back says no.  Chunks are attended in blocks of
    consecutive chunks: a block's keys are gathered as one run of rows [chunk before the block,
    its chunks], whose windows are overlapping strided views of 2 * bucket_size rows.
    """

    def __init__(self, rows: Tensor, lookback: Tensor, bucket_size: int):
        N, T = rows.shape
        self.n, self.chunks, self.bs = N, T // bucket_size, bucket_size
        self.rows = rows.view(N, self.chunks, bucket_size)
        first = self.rows.gather(1, lookback.view(N, 1, 1).expand(N, 1, bucket_size))
        self.extended = torch.cat((first, self.rows), 1)  # [N, 1 + chunks, bs]

    def blocks(self):
        """(first chunk, end chunk) of each block: about BLOCK_ROWS query rows over all N sequences."""
        step = max(1, piece_size(self.rows.device, BLOCK_ROWS, LARGE_BLOCK_ROWS) // (self.n * self.bs))
        for c0 in range(0, self.chunks, step):
            yield c0, min(c0 + step, self.chunks)

    def queries(self, c0: int, c1: int) -> Tensor:
        """Global row ids of the queries of chunks c0 .. c1 - 1, flat."""
        return self.rows[:, c0:c1].reshape(-1)

    def keys(self, c0: int, c1: int) -> Tensor:
        """Global row ids [N, nb, 2bs] of the windows of chunks c0 .. c1 - 1 (a key may repeat across windows)."""
        return _overlapping(self.extended[:, c0:c1 + 1].contiguous())

    def inverse(self, ws: Workspace) -> Tensor:
        """For each global row, its place in this round's order: rows.view(-1)[inverse] == arange."""
        n = self.rows.numel()
        return ws.get("inverse", (n,), torch.long).scatter_(0, self.rows.view(-1), ws.arange(n))

    def gather(self, values: Tensor, c0: int, c1: int, ws: Workspace, name: str) -> Tensor:
        """Windows [N, nb, 2bs, c] of rows values [N * T, c] for chunks c0 .. c1 - 1: one gather of the
        block's run of rows, viewed as overlapping windows."""
        index = self.extended[:, c0:c1 + 1].reshape(-1)
        runs = ws.get(name, (index.numel(), values.shape[-1]), values.dtype)
        torch.index_select(values, 0, index, out=runs)
        return _overlapping(runs.view(self.n, c1 - c0 + 1, self.bs, -1))


def _bias(rnd: _Round, c0: int, c1: int, real: Tensor | None, lookback_masked: Tensor, causal: bool,
          dtype: torch.dtype, device: torch.device) -> Tensor:
    """Additive score bias [N or 1, nb or 1, bs, 2bs] of chunks c0 .. c1 - 1: SELF_SCORE on each token's own
    key, the dtype's most negative finite value on padding, masked look-back and (causal) later keys."""
    bs = rnd.bs
    own_key = torch.zeros(bs, 2 * bs, dtype=dtype, device=device)
    own_key[:, bs:].fill_diagonal_(SELF_SCORE)
    masked_lookback = c0 == 0 and bool(lookback_masked.any())
    if real is None and not causal and not masked_lookback:
        return own_key[None, None]  # broadcast: no per-chunk mask to build
    invalid = torch.zeros(rnd.n, c1 - c0, 1, 2 * bs, dtype=torch.bool, device=device)
    if masked_lookback:
        invalid[:, 0, 0, :bs] = lookback_masked[:, None]
    keys = rnd.keys(c0, c1)
    if real is not None:
        invalid |= ~real.view(-1)[keys][:, :, None, :]
    if causal:
        T = rnd.rows.shape[1] * bs
        invalid = invalid | ((keys % T)[:, :, None, :] > (rnd.rows[:, c0:c1] % T)[..., None])
    return torch.where(invalid, torch.finfo(dtype).min, own_key)


def _fused(device: torch.device, dtype: torch.dtype) -> bool:
    """Use torch's fused CPU flash-attention kernels?  Exact, and about twice as fast as bmm +
    softmax on CPU; they take an additive bias and return (and accept) the log-sum-exp.  CPU tensors
    only, and only with the CPU's small pieces (sizing.py), so that a CPU run with the accelerator's
    sizing takes the matmul path a GPU takes."""
    return (USE_FUSED_CPU and device.type == "cpu" and small_pieces(device)
            and dtype in (torch.float32, torch.float64, torch.bfloat16)
            and hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu_backward"))


USE_FUSED_CPU = True


def _attend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, scale: float, acc: torch.dtype) -> tuple[Tensor, Tensor]:
    """Chunk attention output [N, nc, bs, dh] and log-sum-exp [N, nc, bs] in acc dtype."""
    if _fused(q.device, q.dtype):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, False, attn_mask=bias, scale=scale)
        return out.to(acc), lse.to(acc)
    scores = torch.matmul(q * scale, k.transpose(-1, -2)).to(acc) + bias
    lse = scores.logsumexp(-1)
    out = torch.matmul(scores.sub_(lse[..., None]).exp_().to(v.dtype), v)
    return out.to(acc), lse


def _attend_backward(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, scale: float, out: Tensor, d_out: Tensor,
                     lse: Tensor, acc: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of q [N, nc, bs, dh] and of the windows of k, v [N, nc, 2bs, dh] for one round.

    out, lse are the COMBINED output and log-sum-exp over all rounds, so P = exp(S - lse) is
    this round's share of the union softmax and D = rowsum(dO * out) is the union's.
    """
    if _fused(q.device, q.dtype):
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            d_out.to(q.dtype), q, k, v, out.to(q.dtype), lse, 0.0, False, attn_mask=bias, scale=scale)
    q = q * scale
    probs = (torch.matmul(q, k.transpose(-1, -2)).to(acc) + bias).sub_(lse[..., None]).exp_()
    delta = (d_out.to(acc) * out.to(acc)).sum(-1, keepdim=True)
    d_out = d_out.to(v.dtype)
    d_v = torch.matmul(probs.transpose(-1, -2).to(v.dtype), d_out)
    d_scores = (torch.matmul(d_out, v.transpose(-1, -2)).to(acc) - delta).mul_(probs).to(q.dtype)
    return torch.matmul(d_scores, k) * scale, torch.matmul(d_scores.transpose(-1, -2), q), d_v


SLICE_ROWS = 2 ** 16  # (sequence, head) rows attended per piece: caps the per-piece buffers, not the result
LARGE_SLICE_ROWS = 2 ** 22  # on an accelerator (sizing.py): the 4 heads of a 1 Mb window at k = 1 in one piece


def _slices(B: int, H: int, Tp: int, device: torch.device):
    """(batch slice, head slice) pieces of about SLICE_ROWS rows on `device` (LARGE_SLICE_ROWS on an accelerator):
    whole sequences when they fit, else head groups.

    Heads are independent, so attending a few at a time changes nothing but the size of the
    per-piece buffers (q|k|v rows, gradients), which would otherwise be several times the input.
    """
    rows = piece_size(device, SLICE_ROWS, LARGE_SLICE_ROWS)
    per_sequence = H * Tp
    if per_sequence <= rows:
        step = max(1, rows // per_sequence)
        for b in range(0, B, step):
            yield slice(b, min(b + step, B)), slice(0, H)
        return
    step = max(1, rows // Tp)
    for b in range(B):
        for h in range(0, H, step):
            yield slice(b, b + 1), slice(h, min(h + step, H))


def padded_real(real: Tensor | None, T: int, Tp: int) -> Tensor | None:
    """real [B, T] (None: all real) as [B, Tp] with the internal padding, or None if nothing is padding."""
    if real is None and Tp == T:
        return None
    if real is not None:
        real = F.pad(real, (0, Tp - T), value=False)
        return None if bool(real.all()) else real
    return None  # filled in per slice: only the internal padding is not real


def _piece_rows(q: Tensor, k: Tensor, v: Tensor, order: Tensor, real: Tensor | None, sb: slice, sh: slice,
                Tp: int, ws: Workspace) -> tuple[list[Tensor], Tensor, Tensor | None]:
    """Rows [n * Tp, dh] of q, k and v, order [n, R, Tp] and real [n, Tp] (or None) of one piece."""
    B, H, T, dh = q.shape
    batch, heads = len(range(B)[sb]), sh.stop - sh.start
    n = batch * heads
    if Tp == T:
        rows = [ws.rows(t[sb, sh], f"piece_{name}").view(n * Tp, dh) for name, t in zip("qkv", (q, k, v))]
    else:  # internal padding: zero rows after each sequence's T
        rows = []
        for name, t in zip("qkv", (q, k, v)):
            padded = ws.get(f"piece_{name}", (batch, heads, Tp, dh), t.dtype)
            padded[:, :, :T] = t[sb, sh]
            padded[:, :, T:] = 0
            rows.append(padded.view(n * Tp, dh))
    order = order[sb, sh].reshape(n, -1, Tp)
    if real is None and Tp > T:
        real = torch.arange(Tp, device=q.device).expand(batch, Tp) < T
    elif real is not None:
        real = real[sb]
    return rows, order, None if real is None else real.repeat_interleave(heads, 0)


def _lookback(real: Tensor | None, N: int, T: int, bucket_size: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """Each sequence's last chunk holding real tokens (the first chunk's look-back) and whether the first chunk
    does not look back (a lone chunk): the rule of lsh_chunks."""
    length = torch.full((N,), T, device=device) if real is None else real.sum(-1)
    last = last_chunk(length, bucket_size)
    return last, ~looks_back(0, last)


def _forward_piece(q: Tensor, k: Tensor, v: Tensor, order: Tensor, real: Tensor | None, causal: bool, bs: int,
                   out: Tensor, lse: Tensor, ws: Workspace) -> None:
    """Fill out [N * Tp, dh] and lse [N * Tp] (acc dtype) with the output and log-sum-exp over every
    round, for rows q, k, v [N * Tp, dh] of one piece.

    Each block's results are copied into the round's order, and the whole round is put back in
    token order by one gather: scattering rows block by block (index_copy_) is about 3x slower."""
    N, R, Tp = order.shape
    dh, acc = out.shape[-1], out.dtype
    lookback, lookback_masked = _lookback(real, N, Tp, bs, q.device)
    sorted_out = ws.get("scratch_0", (N, Tp // bs, bs, dh), acc)
    sorted_lse = ws.get("sorted_lse", (N, Tp // bs, bs), acc)
    round_out, round_lse = ws.get("scratch_1", out.shape, acc), ws.get("round_lse", lse.shape, acc)
    for r, rnd in enumerate(_rounds(order, lookback, bs)):
        for c0, c1 in rnd.blocks():
            rows = rnd.queries(c0, c1)
            own = torch.index_select(q, 0, rows, out=ws.get("q", (rows.numel(), dh), q.dtype))
            bias = _bias(rnd, c0, c1, real, lookback_masked, causal, q.dtype, q.device)
            sorted_out[:, c0:c1], sorted_lse[:, c0:c1] = _attend(
                own.view(N, c1 - c0, bs, dh), rnd.gather(k, c0, c1, ws, "k"), rnd.gather(v, c0, c1, ws, "v"),
                bias, dh ** -0.5, acc)
        into_out, into_lse = (out, lse) if r == 0 else (round_out, round_lse)
        inverse = rnd.inverse(ws)
        torch.index_select(sorted_out.view(-1, dh), 0, inverse, out=into_out)
        torch.index_select(sorted_lse.view(-1), 0, inverse, out=into_lse)
        if r:  # mix in this round by its share of the union softmax (flash attention's split-KV merge)
            out.lerp_(round_out, torch.sigmoid(round_lse - lse)[:, None])
            torch.logaddexp(lse, round_lse, out=lse)
    if real is not None:
        out.view(N, Tp, dh).masked_fill_(~real[..., None], 0.0)


def _backward_piece(q: Tensor, k: Tensor, v: Tensor, order: Tensor, real: Tensor | None, causal: bool, bs: int,
                    out: Tensor, lse: Tensor, grad_out: Tensor, grads: list[Tensor], ws: Workspace) -> None:
    """Write into grads (three [N * Tp, dh] tensors, acc dtype) the gradients of one piece's rows q, k, v,
    from its output [N * Tp, dh], log-sum-exp [N * Tp] and output gradient [N * Tp, dh] (zero at padding).

    Per round, gradients gather in the round's order: a query's is copied to its place, and a
    window's key and value gradients are folded onto its two chunks (the look-back half of each
    window onto the chunk before).  One gather per round then adds them in token order, where
    index_add_ of every window's rows would scatter twice the rows, about 3x slower per row."""
    N, R, Tp = order.shape
    dh, acc = out.shape[-1], out.dtype
    chunks = Tp // bs
    lookback, lookback_masked = _lookback(real, N, Tp, bs, q.device)
    sorted_grads = [ws.get(f"scratch_{i}", (N, chunks, bs, dh), acc) for i in range(3)]
    held = ws.get("lookback_grads", (2, N, bs, dh), acc)  # the first window's look-back halves of dk, dv
    unsorted = ws.get("scratch_3", (N * Tp, dh), acc)
    sequences = torch.arange(N, device=q.device)
    for r, rnd in enumerate(_rounds(order, lookback, bs)):
        for c0, c1 in rnd.blocks():
            rows = rnd.queries(c0, c1)
            shape = (N, c1 - c0, bs)
            own, o, d_o, l = (torch.index_select(t, 0, rows, out=ws.get(name, (rows.numel(), *t.shape[1:]), t.dtype))
                              .view(*shape, *t.shape[1:])
                              for name, t in (("q", q), ("out", out), ("grad_out", grad_out), ("lse", lse)))
            bias = _bias(rnd, c0, c1, real, lookback_masked, causal, q.dtype, q.device)
            d_q, d_k, d_v = _attend_backward(own, rnd.gather(k, c0, c1, ws, "k"), rnd.gather(v, c0, c1, ws, "v"),
                                             bias, dh ** -0.5, o, d_o, l, acc)
            sorted_grads[0][:, c0:c1] = d_q
            for into, d, first in zip(sorted_grads[1:], (d_k, d_v), held):
                d = d.reshape(N, c1 - c0, 2, bs, dh)  # window j: [the chunk before c0 + j, chunk c0 + j]
                torch.add(d[:, :-1, 1], d[:, 1:, 0], out=into[:, c0:c1 - 1])
                into[:, c1 - 1] = d[:, -1, 1]  # its look-back half comes with the next block
                if c0:
                    into[:, c0 - 1] += d[:, 0, 0]
                else:  # chunk 0 looks back to a later chunk, not yet written
                    first.copy_(d[:, 0, 0])
        for into, first in zip(sorted_grads[1:], held):
            into.index_put_((sequences, lookback), first, accumulate=True)
        inverse = rnd.inverse(ws)
        for into, sorted_d in zip(grads, sorted_grads):
            if r == 0:
                torch.index_select(sorted_d.view(-1, dh), 0, inverse, out=into)
            else:
                into.add_(torch.index_select(sorted_d.view(-1, dh), 0, inverse, out=unsorted))


def attention_forward(q: Tensor, k: Tensor, v: Tensor, order: Tensor, real: Tensor | None, causal: bool,
                      bucket_size: int, ws: Workspace, *, fresh: bool = False) -> tuple[Tensor, Tensor]:
    """Output [B, H, Tp, dh] and log-sum-exp [B, H, Tp] (accumulation dtype) of chunked attention over every
    round of an LSH sort order, rounds combined by log-sum-exp.

    q, k, v [B, H, T, dh] (any strides); order [B, H, R, Tp] with Tp = T rounded up to a multiple of
    bucket_size, each round a permutation of arange(Tp) with real tokens first; real bool [B, Tp] as
    padded_real gives it (None: no padding).  Rows of padding queries are zero.  Matmuls run in the
    inputs' dtype; log-sum-exp and the mixing of rounds in float32 (float64 for float64 inputs).
    Sequences and heads are attended a piece at a time (_slices), each round of a piece a block of
    chunks at a time (_Round.blocks).  The results live in ws (valid until its next use) unless fresh.
    """
    B, H, T, dh = q.shape
    Tp = order.shape[-1]
    acc = torch.promote_types(q.dtype, torch.float32)
    ws = ws.scope(KERNEL_SCOPE)
    out, lse = _result(ws, fresh, "result_out", (B, H, Tp, dh), acc), _result(ws, fresh, "result_lse", (B, H, Tp), acc)
    for sb, sh in _slices(B, H, Tp, q.device):
        rows, piece_order, piece_real = _piece_rows(q, k, v, order, real, sb, sh, Tp, ws)
        n = rows[0].shape[0]
        _forward_piece(*rows, piece_order, piece_real, causal, bucket_size, out[sb, sh].view(n, dh),
                       lse[sb, sh].view(n), ws)
    return out, lse


def attention_backward(q: Tensor, k: Tensor, v: Tensor, order: Tensor, real: Tensor | None, causal: bool,
                       bucket_size: int, out: Tensor, lse: Tensor, grad_out: Tensor, ws: Workspace, *,
                       fresh: bool = False) -> list[Tensor]:
    """Gradients [B, H, T, dh] (the inputs' dtype) of q, k and v, given attention_forward's out and lse and
    the gradient of the output's first T rows, grad_out [B, H, T, dh].  In ws unless fresh."""
    B, H, T, dh = q.shape
    Tp = order.shape[-1]
    acc = out.dtype
    ws = ws.scope(KERNEL_SCOPE)
    if Tp == T and real is None and grad_out.dtype == acc:
        padded = ws.rows(grad_out, "grad_out_rows")  # read only: no padding rows to zero
    else:
        padded = torch.zeros(B, H, Tp, dh, dtype=acc, device=q.device)
        padded[:, :, :T] = grad_out  # a copy of our own: padding rows are zeroed in place below
    # gradients accumulate straight into the results when the layout allows (no internal
    # padding, and the inputs' dtype is the accumulation dtype), else into per-piece buffers
    direct = Tp == T and q.dtype == acc
    grads = [_result(ws, fresh, f"result_d{name}", (B, H, T, dh), q.dtype) for name in "qkv"]  # every row written
    for sb, sh in _slices(B, H, Tp, q.device):
        rows, piece_order, piece_real = _piece_rows(q, k, v, order, real, sb, sh, Tp, ws)
        n = rows[0].shape[0]
        piece_grad_out = padded[sb, sh].view(n, dh)
        if piece_real is not None:  # padding rows were overwritten with zeros: nothing flows back through them
            piece_grad_out.view(-1, Tp, dh).masked_fill_(~piece_real[..., None], 0.0)
        if direct:
            piece_grads = [g[sb, sh].view(n, dh) for g in grads]
        else:
            piece_grads = [ws.get(f"grad_{name}", (n, dh), acc) for name in "qkv"]
        _backward_piece(*rows, piece_order, piece_real, causal, bucket_size, out[sb, sh].view(n, dh),
                        lse[sb, sh].view(n), piece_grad_out, piece_grads, ws)
        if not direct:
            for g, piece in zip(grads, piece_grads):
                g[sb, sh] = piece.view(*g[sb, sh].shape[:2], Tp, dh)[:, :, :T]
    return grads


def _result(ws: Workspace, fresh: bool, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """A result buffer: new (it outlives the call, as autograd's results do) or ws's `name`."""
    return torch.empty(shape, dtype=dtype, device=ws.device) if fresh else ws.get(name, shape, dtype)


def chunk_attention(q: Tensor, k: Tensor, v: Tensor, order: Tensor, real: Tensor | None, causal: bool,
                    bucket_size: int) -> Tensor:
    """model.lsh.ChunkAttention by the memory-efficient kernel: [B, H, T, dh] in v's dtype, with autograd."""
    return LSHAttentionFunction.apply(q, k, v, order, real, causal, bucket_size)


class LSHAttentionFunction(torch.autograd.Function):
    """attention_forward as an autograd Function: keeps q, k, v, the order, the output and the
    log-sum-exp, and recomputes chunk scores in backward (attention_backward).  real: bool [B, T] or
    None.  Returns [B, H, T, dh] in v's dtype."""

    @staticmethod
    def forward(ctx, q, k, v, order, real, causal: bool, bucket_size: int):
        T = q.shape[2]
        real = padded_real(real, T, order.shape[-1])
        out, lse = attention_forward(q, k, v, order, real, causal, bucket_size, Workspace(q.device), fresh=True)
        ctx.save_for_backward(q, k, v, order, real, out, lse)
        ctx.causal, ctx.bucket_size = causal, bucket_size
        return out[:, :, :T].to(v.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, order, real, out, lse = ctx.saved_tensors
        grads = attention_backward(q, k, v, order, real, ctx.causal, ctx.bucket_size, out, lse, grad_out,
                                   Workspace(q.device), fresh=True)
        return *grads, None, None, None, None


def _rounds(order: Tensor, lookback: Tensor, bucket_size: int):
    """Each round of order [N, R, T] as a _Round over global rows (sequence n's rows start at n * T)."""
    N, R, T = order.shape
    offsets = (torch.arange(N, device=order.device) * T)[:, None]
    for r in range(R):
        yield _Round(order[:, r] + offsets, lookback, bucket_size)
