"""ByHand: the one interface between the fast engine and a block branch it runs itself.

An adapter wraps one branch of a ReversibleBlock (f or g) and says, from named attributes of
its modules, what it can do without autograd.  The engine (engine.py) asks can_run_by_hand(x)
for each branch of a pass; where the answer is yes, the pass's forward runs forward_by_hand with
the pass's Workspace (and, for the last LSH blocks, a list to keep state in), and backward calls
backward_by_hand instead of recomputing the branch under autograd.  Adapters are chosen by the
branch's type in engine.adapter; a branch without one runs as the plain engine runs it.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from ..reversible import RngState
from .workspace import Workspace

BranchGrads = tuple[Tensor, Tensor, list[Tensor | None]]


class ByHand(ABC):
    """What a block branch can run by hand for the fast engine."""

    def __init__(self, branch: nn.Module):
        self.branch = branch

    @abstractmethod
    def can_run_by_hand(self, x: Tensor) -> bool:
        """Whether backward_by_hand applies to the branch's input x (its dtype, the autocast state, live
        dropout): where it does not, the engine recomputes the branch under autograd."""

    @torch.no_grad()
    def forward_by_hand(self, x: Tensor, *, workspace: Workspace | None = None, keep: list | None = None,
                        **kwargs) -> Tensor:
        """branch(x, **kwargs) without autograd, computed exactly as backward_by_hand recomputes it (the
        reversible backward subtracts the recomputed output to rebuild its input).  Applies whatever
        can_run_by_hand says, running the branch itself where it can do no better (this default).

        workspace: the pass's, shared by every branch run by hand (None: one of its own).
        keep: a list to receive state that spares backward_by_hand work (what that is is the adapter's)."""
        return self.branch(x, **kwargs)

    @abstractmethod
    def backward_by_hand(self, x: Tensor, grad: Tensor, *, rng: RngState, workspace: Workspace,
                         kept: list | None = None, chunks: list[int] | None = None, **kwargs) -> BranchGrads:
        """Recompute branch(x, **kwargs) and differentiate <branch(x), grad>: returns the output, the gradient
        with respect to x, and those of branch.parameters() in that order (None where none is needed).

        rng: the RNG state the branch's forward pass began with.  workspace: the pass's.  kept: what
        forward_by_hand kept (None: nothing).  chunks: sequence positions where a position-wise branch
        may be cut (ReversibleBlock.g_bounds; None: one piece).  kwargs: the branch's own (mask, rotary)."""
