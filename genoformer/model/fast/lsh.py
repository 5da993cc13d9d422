"""Pre-norm LSH attention run by hand: no autograd, a head group at a time, every buffer in a Workspace.

The readable layer (model/lsh.py) under autograd keeps ~8 [B, T, d_model] intermediates and
makes ~25 fresh [T, width] tensors per call.  Here, heads being independent, the layer runs one
head group at a time (head_groups), each group's share of the output projection added into the
result, so only one group's projections and attention state exist at once; every [T, width]
intermediate lives in the pass's Workspace, mapped once however many groups and blocks reuse it.
The arithmetic is the layer's own with the memory-efficient kernel (lsh_kernels.py), so outputs
equal the autograd path's; tests/model/fast compare each piece with autograd.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..lsh import UNIT_EPS, Hashed, LSHSelfAttention, unit_length_grad
from ..positions import Rotary, resolve_rotary, rotate
from ..prenorm import PreNorm
from ..reversible import RngState, accumulate, grads_of
from ..sizing import piece_size
from .by_hand import BranchGrads, ByHand
from .lsh_kernels import KERNEL_SCOPE, attention_backward, attention_forward, padded_real
from .workspace import Workspace

GROUP_ROWS = 2 ** 16  # tokens x heads run at once (head_groups)
LARGE_GROUP_ROWS = 2 ** 22  # on an accelerator (sizing.py): the 4 heads of a 1 Mb window at k = 1 in one group


class KeptAttention(NamedTuple):
    """One head group's attention state from a forward pass by hand, kept for that group's attend_backward
    (which then neither hashes nor runs the kernel's forward): sort order, output and log-sum-exp."""
    order: Tensor
    out: Tensor
    lse: Tensor


def head_groups(attention: LSHSelfAttention, batch: int, length: int, device: torch.device) -> list[slice]:
    """Heads run together on `device`: at long lengths the layer's intermediates are ~8 [B, T, d_model] tensors,
    a group's a fraction."""
    per = max(1, piece_size(device, GROUP_ROWS, LARGE_GROUP_ROWS) // max(batch * length, 1))
    return [slice(h, min(h + per, attention.heads)) for h in range(0, attention.heads, per)]


def full_precision(x: Tensor) -> bool:
    """Whether attend_backward applies to x: float32 or float64 without autocast (mixed precision keeps
    autograd, which knows autocast's casts)."""
    return x.dtype in (torch.float32, torch.float64) and not torch.is_autocast_enabled(x.device.type)


class PreNormLSH(ByHand):
    """ByHand for PreNorm(d, LSHSelfAttention): the layer by head groups, in full precision by hand.

    Runs by hand unless the output dropout is live (its mask spans every head).  In full precision the
    forward pass and backward's recompute go through project_by_heads / attend_backward; under autocast
    the forward pass is the layer's own and backward recomputes each head group under autograd.
    kept (forward's `keep`): each group's KeptAttention, costing T * d_model in the accumulation dtype.
    """

    def __init__(self, branch: PreNorm):
        super().__init__(branch)
        self.norm: nn.LayerNorm = branch.norm
        self.attention: LSHSelfAttention = branch.fn

    def can_run_by_hand(self, x: Tensor) -> bool:
        return not (self.attention.dropout and self.attention.training)

    @torch.no_grad()
    def forward_by_hand(self, x: Tensor, *, workspace: Workspace | None = None, keep: list | None = None,
                        mask: Tensor | None = None, positions: Tensor | None = None,
                        rotary: Rotary | None = None) -> Tensor:
        attention, normed = self.attention, self.norm(x)
        if full_precision(normed):
            groups = (head_groups(attention, *x.shape[:2], x.device) if self.can_run_by_hand(x)
                      else [slice(0, attention.heads)])
            out = project_by_heads(attention, normed, mask, positions, rotary, groups, keep,
                                   Workspace(x.device) if workspace is None else workspace)
        else:
            out = attention.to_out(attention.attend(normed, mask, positions, rotary=rotary))
        return F.dropout(out, attention.dropout, training=attention.training)

    def backward_by_hand(self, x: Tensor, grad: Tensor, *, rng: RngState, workspace: Workspace,
                         kept: list | None = None, **f_kwargs) -> BranchGrads:
        """Recompute and differentiate one head group at a time.  The output projection is applied by column
        blocks too: each group's share of the output is added in, and its output gradient and weight-gradient
        columns come from that group alone, so neither the whole attention output nor its gradient is ever
        held.  Each group replays the forward pass's RNG state, so it draws the hash seed the layer drew.
        kept: the forward pass's groups' state, each dropped once used; its order and output stand in for
        the recomputed ones, which differ from them only by the reconstruction's rounding."""
        attention = self.attention
        with torch.enable_grad():
            x = x.detach().requires_grad_()
            normed = self.norm(x)
        inner = normed.detach().requires_grad_()
        weight, bias = attention.to_out.weight, attention.to_out.bias
        flat_grad = grad.reshape(-1, grad.shape[-1])
        out = None
        d_weight = torch.empty_like(weight)
        inner_params = [attention.to_qk.weight, attention.to_v.weight]
        by_hand = full_precision(inner)
        if by_hand:
            totals: list[Tensor | None] = [torch.zeros_like(p) for p in inner_params]
            total_of = {id(p): total for p, total in zip(inner_params, totals)}
        else:
            totals = [None] * len(inner_params)
        d_inner = None
        for i, group in enumerate(head_groups(attention, *x.shape[:2], x.device)):
            columns = attention.rows(group)
            share = weight[:, columns].t()  # the output projection's rows for this group's columns
            if by_hand:
                group_grad = torch.mm(flat_grad, share.detach().t(), out=workspace.get(
                    "output_grad", (flat_grad.shape[0], share.shape[0]), flat_grad.dtype))
                group_kept = None
                if kept is not None:
                    group_kept, kept[i] = kept[i], None
                with rng.replay():
                    attended, d_inner, row_grads = attend_backward(
                        attention, inner.detach(), group_grad.view(*grad.shape[:-1], -1), d_inner, workspace,
                        group, kept=group_kept, **f_kwargs)
                del group_kept
                for param, rows, grad_rows in row_grads:
                    total_of[id(param)][rows] = grad_rows
            else:
                with torch.enable_grad(), rng.replay():
                    attended = attention.attend(inner, heads=group, **f_kwargs)
                    d_share, grads = grads_of(attended, inner, inner_params, F.linear(grad, share))
                d_inner = d_share if d_inner is None else d_inner.add_(d_share)
                totals = accumulate(totals, grads)
                del d_share, grads
            # in the weights' dtype whatever the autocast state: groups add their shares into one out and d_weight
            flat_out = attended.detach().reshape(-1, attended.shape[-1]).to(weight.dtype)
            with torch.autocast(inner.device.type, enabled=False):
                out = torch.addmm(bias, flat_out, share) if out is None else out.addmm_(flat_out, share)
                torch.mm(flat_grad.t().to(weight.dtype), flat_out, out=d_weight[:, columns])
            del attended, flat_out
        norm_params = list(self.norm.parameters())
        d_x, norm_grads = grads_of(normed, x, norm_params, d_inner)
        by_param = {id(p): g for p, g in zip(inner_params + norm_params, totals + norm_grads)}
        by_param.update({id(weight): d_weight, id(bias): flat_grad.sum(0)})
        return out.view_as(grad), d_x, [by_param.get(id(p)) if p.requires_grad else None
                                         for p in self.branch.parameters()]


@torch.no_grad()
def project_by_heads(attention: LSHSelfAttention, x: Tensor, mask: Tensor | None, positions: Tensor | None,
                     rotary: Rotary | None, groups: list[slice], keep: list[KeptAttention] | None,
                     workspace: Workspace) -> Tensor:
    """to_out(attend(x)) without autograd, a head group at a time as backward_by_hand recomputes it: the groups'
    [T, width] intermediates reuse the workspace, and each group's share of the output projection is added
    into the result.  keep: a list to receive each group's KeptAttention."""
    B, T, d = x.shape
    state = torch.get_rng_state()
    result = None
    for heads in groups:
        torch.set_rng_state(state)  # every group draws the hash seed one whole call draws
        h, _, out, lse, attended = attend_in(attention, workspace, x, mask, positions, heads, rotary)
        if keep is not None:
            keep.append(KeptAttention(h.order, out.clone(), lse.clone()))
        attended = attended.view(B * T, -1)
        share = attention.to_out.weight[:, attention.rows(heads)].t()
        result = torch.addmm(attention.to_out.bias, attended, share) if result is None else result.addmm_(attended, share)
    return result.view(B, T, d)


@torch.no_grad()
def attend_backward(attention: LSHSelfAttention, x: Tensor, grad: Tensor, d_x: Tensor | None, workspace: Workspace,
                    heads: slice, mask: Tensor | None = None, positions: Tensor | None = None,
                    rotary: Rotary | None = None, kept: KeptAttention | None = None
                    ) -> tuple[Tensor, Tensor, list[tuple[nn.Parameter, slice, Tensor]]]:
    """attention.attend(x, mask, positions, heads) recomputed and differentiated by hand.

    Returns the attention output [B, T, width]; the gradient of <attend(x), grad> (grad [B, T, width])
    with respect to x [B, T, d_model], added into d_x (None: a new tensor); and (parameter, rows,
    gradient of those rows) for the group's rows of the projections.  Every [T, width] intermediate
    lives in `workspace` (the output too, valid until its next use).  Draws the hash seed as attend
    does; see full_precision for the dtypes.  kept: this group's state from the forward pass, used
    instead of hashing and attending again.
    """
    B, T, d = x.shape
    width = (heads.stop - heads.start) * attention.dim_head
    h, real, out, lse, attended = attend_in(attention, workspace, x, mask, positions, heads, rotary, kept)
    grad = grad.view(B, T, -1, attention.dim_head).transpose(1, 2)
    d_q, d_k, d_v = attention_backward(h.q, h.k, h.v, h.order, real, attention.causal, attention.bucket_size, out,
                                       lse, grad, workspace)
    norm = torch.linalg.vector_norm(h.q, dim=-1, keepdim=True).clamp_(min=UNIT_EPS)
    d_q.add_(unit_length_grad(h.k, norm, d_k, UNIT_EPS, in_place=True))
    # q's gradient, rotated back, goes into its projection's spent buffer, v's into v's when not contiguous
    flat_x = x.reshape(B * T, d)
    d_qk = workspace.get("proj_qk", (B * T, width), x.dtype)
    rotate(d_q, *resolve_rotary(positions, rotary, T, attention.dim_head, x.device), inverse=True,
           out=d_qk.view(B, T, -1, attention.dim_head).transpose(1, 2))
    d_v = workspace.rows(d_v.transpose(1, 2), "proj_v").view(B * T, width)
    rows = attention.rows(heads)
    if d_x is None:  # the first group: d_x is made where the kernel's scratch was (the peak stays where it was)
        workspace.release(KERNEL_SCOPE + "scratch_")
    param_grads = []
    for d_projection, linear in ((d_qk, attention.to_qk), (d_v, attention.to_v)):
        weight = linear.weight.detach()[rows]
        d_x = torch.mm(d_projection, weight) if d_x is None else d_x.view(B * T, d).addmm_(d_projection, weight)
        param_grads.append((linear.weight, rows, torch.mm(d_projection.t(), flat_x)))
    return attended, d_x.view(B, T, d), param_grads


def attend_in(attention: LSHSelfAttention, workspace: Workspace, x: Tensor, mask: Tensor | None,
              positions: Tensor | None, heads: slice, rotary: Rotary | None, kept: KeptAttention | None = None
              ) -> tuple[Hashed, Tensor | None, Tensor, Tensor, Tensor]:
    """attend without autograd, every [T, width] tensor in workspace: the prepared projections, the kernel's
    padding mask, its output [B, h, Tp, dh] and log-sum-exp (kept's, when given), and the output as
    [B, T, width]."""
    B, T, _ = x.shape
    h = prepare(attention, workspace, x, mask, positions, heads, rotary, None if kept is None else kept.order)
    real = padded_real(None if mask is None else h.real, T, h.order.shape[-1])
    if kept is None:
        out, lse = attention_forward(h.q, h.k, h.v, h.order, real, attention.causal, attention.bucket_size, workspace)
    else:
        out, lse = kept.out, kept.lse
    attended = workspace.rows(out[:, :, :T].transpose(1, 2), "attended").view(B, T, -1)
    return h, real, out, lse, attended


def prepare(attention: LSHSelfAttention, workspace: Workspace, x: Tensor, mask: Tensor | None,
            positions: Tensor | None, heads: slice, rotary: Rotary | None, order: Tensor | None = None) -> Hashed:
    """LSHSelfAttention.hashed without autograd, in full precision, the projections, q and k in workspace
    buffers (one each, so that one head's v is contiguous: the kernel copies strided rows).  A given order
    (kept from the forward pass) skips the seed and the hashing."""
    B, T, _ = x.shape
    real = attention.real(x, mask)
    cos, sin = resolve_rotary(positions, rotary, T, attention.dim_head, x.device)
    rows = attention.rows(heads)
    qk, v = (attention.split(torch.mm(x.reshape(B * T, -1), linear.weight.detach()[rows].t(),
                                      out=workspace.get(name, (B * T, rows.stop - rows.start), x.dtype)).view(B, T, -1))
             for name, linear in (("proj_qk", attention.to_qk), ("proj_v", attention.to_v)))
    buckets = counts = seed = None
    if order is None:
        order, buckets, counts, seed = attention.sort(qk, real, heads)
    q = rotate(qk, cos, sin, out=workspace.get("rotated_q", qk.shape, qk.dtype))
    norm = torch.linalg.vector_norm(q, dim=-1, keepdim=True).clamp_(min=UNIT_EPS)
    k = torch.div(q, norm, out=workspace.get("unit_k", q.shape, q.dtype))
    return Hashed(q, k, v, order, real, buckets, counts, seed)
