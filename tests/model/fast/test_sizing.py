"""The accelerator's sizing (model/sizing.py) run on a CPU: each size takes its large twin, the model computes
the plain path's function with it, and the CPU-only fused attention kernels are never dispatched, as on a GPU."""
from __future__ import annotations

import pytest
import torch
from lsh_refs import module, padding_mask
from stacks import assert_same, inputs, relative_error, run, run_autocast, stack
from torch.utils._python_dispatch import TorchDispatchMode

from genoformer.model import attention, lsh, reversible, sizing
from genoformer.model.fast import FastEngine, lsh_kernels
from genoformer.model.fast import lsh as fast_lsh
from genoformer.model.lsh import LSHSelfAttention
from genoformer.model.reversible import Engine

CPU = torch.device("cpu")
FUSED_CPU_OPS = {"_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention_for_cpu_backward"}


@pytest.fixture
def accelerator(monkeypatch):
    """The accelerator's sizing on this CPU."""
    monkeypatch.setattr(sizing, "SMALL_PIECE_DEVICES", ())


def piece_counts() -> dict[str, int]:
    """How many pieces each sized loop cuts the same shapes into under the sizing in force."""
    block = stack(["local"], 0.0, ff_chunks=1).blocks[0]
    rows = torch.arange(2 ** 15).view(1, -1)
    return {"feed-forward chunks": len(block.g_bounds(torch.zeros(1, 5000, 32))) - 1,
            "local-attention chunks": len(attention._block_chunks(torch.zeros(1, 512, 64, 4, 2))),
            "LSH head groups": len(fast_lsh.head_groups(LSHSelfAttention(32, 4), 1, 2 ** 15, CPU)),
            "kernel pieces": len(list(lsh_kernels._slices(1, 4, 2 ** 15, CPU))),
            "kernel blocks": len(list(lsh_kernels._Round(rows, torch.zeros(1, dtype=torch.long), 64).blocks())),
            "fused CPU kernels": int(lsh_kernels._fused(CPU, torch.float32))}


def test_each_size_takes_its_large_twin_off_the_small_piece_devices(monkeypatch):
    assert piece_counts() == {"feed-forward chunks": 3, "local-attention chunks": 4, "LSH head groups": 2,
                              "kernel pieces": 2, "kernel blocks": 4, "fused CPU kernels": 1}
    monkeypatch.setattr(sizing, "SMALL_PIECE_DEVICES", ())
    assert piece_counts() == {"feed-forward chunks": 1, "local-attention chunks": 1, "LSH head groups": 1,
                              "kernel pieces": 1, "kernel blocks": 1, "fused CPU kernels": 0}


def shrink_large_sizes(monkeypatch) -> None:
    """Large twins small enough that the test's 48 tokens are cut into several pieces of each kind."""
    for owner, name, value in ((reversible, "LARGE_G_CHUNK_TOKENS", 16), (attention, "LARGE_CHUNK_SCORES", 2 ** 12),
                               (fast_lsh, "LARGE_GROUP_ROWS", 96), (lsh_kernels, "LARGE_SLICE_ROWS", 48),
                               (lsh_kernels, "LARGE_BLOCK_ROWS", 40)):
        monkeypatch.setattr(owner, name, value)


def plain_reference(seq):
    """seq with the plain Engine and the plain reference chunk attention in its LSH layers."""
    seq.engine = Engine()
    for block in seq.blocks:
        if isinstance(block.f.fn, LSHSelfAttention):
            block.f.fn.kernel = lsh.chunk_attention
    return seq


@pytest.mark.parametrize("pieces", ["large", "several"])
def test_accelerator_sizing_computes_the_plain_function(accelerator, monkeypatch, pieces):
    """float64 outputs and every gradient of a reversible stack by the fast engine, against the plain residual
    stack with the plain reference kernel; with the large sizes as they are (one piece of each kind here) and
    shrunk so that every sized loop runs several times."""
    if pieces == "several":
        shrink_large_sizes(monkeypatch)
    torch.manual_seed(0)
    seq = stack(["lsh", "local", "lsh", "full"], 0.0, engine=FastEngine()).double().train()
    x, mask = inputs()
    fast = run(seq, x, mask, reversible=True)
    assert_same(run(plain_reference(seq), x, mask, reversible=False), fast, tol=1e-9)


def test_accelerator_sizing_under_autocast_matches_the_plain_engine(accelerator, monkeypatch):
    """The path bf16 training takes on a GPU (LSH head groups recomputed under autograd), in bf16 on this CPU:
    the plain engine's gradients, to the tolerance the CPU's sizing is held to (fast/test_engine.py)."""
    shrink_large_sizes(monkeypatch)
    torch.manual_seed(0)
    seq = stack(["lsh", "local"], 0.0, engine=FastEngine()).train()
    x, mask = inputs(torch.float32)
    fast = run_autocast(seq, x, mask, True)
    errors = [relative_error(f, p) for f, p in zip(fast, run_autocast(plain_reference(seq), x, mask, True))]
    assert max(errors) <= 1e-2, max(errors)


class DispatchedOps(TorchDispatchMode):
    """The names of the aten ops dispatched while active (forward and the backward run in its scope)."""

    def __init__(self):
        super().__init__()
        self.names: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        return func(*args, **(kwargs or {}))


def lsh_outputs_and_ops(dtype: torch.dtype) -> tuple[list[torch.Tensor], set[str]]:
    m = module(d=32, heads=4, bucket_size=8, n_hashes=3, causal=True, dtype=dtype, kernel=lsh_kernels.chunk_attention)
    x = torch.randn(3, 45, 32, dtype=dtype, generator=torch.Generator().manual_seed(0)).requires_grad_()
    with DispatchedOps() as ops:
        out = m(x, mask=padding_mask(3, 45, seed=6))
        out.sin().sum().backward()
    return [out.detach(), x.grad, *(p.grad for p in m.parameters())], ops.names


def test_fused_cpu_kernels_are_never_taken_with_the_accelerators_sizing(monkeypatch):
    """On CPU sizing float32 goes through torch's fused CPU flash kernels (the control: the recorder sees them);
    with the accelerator's it never does, and computes the same outputs and gradients by matmuls (float32
    rounding apart: both are exact algorithms, measured ~1e-7)."""
    fused, fused_ops = lsh_outputs_and_ops(torch.float32)
    assert FUSED_CPU_OPS <= fused_ops
    monkeypatch.setattr(sizing, "SMALL_PIECE_DEVICES", ())
    matmuls, matmul_ops = lsh_outputs_and_ops(torch.float32)
    assert not FUSED_CPU_OPS & matmul_ops and "bmm" in matmul_ops
    for a, b in zip(fused, matmuls):
        assert relative_error(b, a) <= 1e-5
