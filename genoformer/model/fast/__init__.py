"""The CPU fast path: the Reformer's function computed in less memory and time, never a different one.

The readable model (model/lsh.py, feedforward.py, reversible.py) runs under plain autograd.  This
package holds what a long window on a CPU needs on top, behind two explicit hooks the Reformer
selects: FastEngine (engine.py), the engine of its ReversibleSequence, which runs block branches by
hand through their ByHand adapters (by_hand.py: feedforward.py, lsh.py) in one Workspace per pass
(workspace.py); and chunk_attention (lsh_kernels.py), the memory-efficient LSH kernel its attention
layers are given.  tests/model/fast compare every piece with the plain path.
"""
from .by_hand import ByHand
from .engine import FastEngine, adapter
from .lsh_kernels import chunk_attention
from .workspace import Workspace

__all__ = ["ByHand", "FastEngine", "Workspace", "adapter", "chunk_attention"]
