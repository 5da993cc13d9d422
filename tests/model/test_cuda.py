"""The CUDA path (marked gpu: skipped without CUDA, run by benchmarks/gpu_check.py on a GPU machine).

On a GPU the model cuts its work in the accelerator's large pieces (model/sizing.py) and runs the LSH kernel by
batched matmuls; tests/model/fast/test_sizing.py holds that sizing to the plain path on a CPU.  Here the same
code runs on CUDA against independent truth:
- the LSH kernel, forward and backward, against the plain reference (model/lsh.py) in float64 on the CPU, given
  the same inputs and sort order, errors relative to the largest value: float32 to 1e-4 (~3e-7 measured on a
  CPU with the accelerator's sizing); causal float32 to 2e-3, since a query that sees only its own key (the
  first tokens) weighs it by exp(score + SELF_SCORE - lse) with the rounds' log-sum-exp rounded at 5e4 in
  float32, up to ~0.4 % off (5.5e-4 measured on a CPU, either sizing); bfloat16 to 2e-2 (a few units of bf16's
  2^-8 in scores, probabilities and products, softmax statistics in float32; ~6e-3 measured on a CPU);
- the reversible stack (fast engine) against the plain residual stack with the plain reference kernel, both on
  CUDA: float32 to 1e-4 (dropout masks replayed from the CUDA generator), bf16 autocast to 1e-2 (as the CPU's
  bf16 tests);
- hashing: the same buckets on every call with one seed (rotations come from a CPU generator), and the argmax
  definition computed in float64 on the CPU wherever the best projection leads by more than float32 rounding.
"""
from __future__ import annotations

import pytest
import torch
from lsh_refs import hash_by_definition, module, padding_mask
from stacks import assert_same, inputs, relative_error, run, run_autocast, stack

from genoformer.model import lsh
from genoformer.model.fast import FastEngine, lsh_kernels
from genoformer.model.lsh import LSHSelfAttention
from genoformer.model.lsh_hashing import hash_buckets
from genoformer.model.reversible import Engine

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def full_float32():
    """float32 matmuls in float32 (no TF32), whatever the process set before."""
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


def kernel_inputs(causal: bool):
    """q, k, v [2, 2, 150, 16] float64 on the CPU, the layer's own sort order (bucket 16, 3 rounds) and a padding
    mask: the projections and hashing of a small LSH layer."""
    m = module(d=32, heads=2, bucket_size=16, n_hashes=3, causal=causal, seed=3)
    x = torch.randn(2, 150, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    mask = padding_mask(2, 150, seed=5)
    with torch.no_grad():
        h = m.hashed(x, mask)
    return h.q, h.k, h.v, h.order, h.real


def attend_with_grads(kernel, q, k, v, order, real, causal, grad_out):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = kernel(q, k, v, order, real, causal, 16)
    out.backward(grad_out)
    return [out.detach(), q.grad, k.grad, v.grad]


@pytest.mark.parametrize("dtype, causal, tol", [(torch.float32, False, 1e-4), (torch.float32, True, 2e-3),
                                               (torch.bfloat16, False, 2e-2), (torch.bfloat16, True, 2e-2)],
                         ids=["float32", "float32-causal", "bf16", "bf16-causal"])
def test_lsh_kernel_forward_and_backward_match_the_plain_reference(dtype, causal, tol):
    q, k, v, order, real = kernel_inputs(causal)
    q, k, v = (t.to(dtype).double() for t in (q, k, v))  # the inputs both sides see, exactly
    grad_out = torch.randn(v.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(6)).to(dtype).double()
    reference = attend_with_grads(lsh.chunk_attention, q, k, v, order, real, causal, grad_out)
    on_cuda = attend_with_grads(lsh_kernels.chunk_attention, *(t.to(CUDA, dtype) for t in (q, k, v)),
                                order.to(CUDA), real.to(CUDA), causal, grad_out.to(CUDA, dtype))
    for name, got, expected in zip(["output", "dq", "dk", "dv"], on_cuda, reference):
        assert got.dtype == dtype
        assert relative_error(got.cpu().double(), expected) <= tol, name


def plain_reference(seq):
    """seq with the plain Engine and the plain reference chunk attention in its LSH layers."""
    seq.engine = Engine()
    for block in seq.blocks:
        if isinstance(block.f.fn, LSHSelfAttention):
            block.f.fn.kernel = lsh.chunk_attention
    return seq


@pytest.mark.parametrize("dropout", [0.0, 0.1])
def test_reversible_stack_on_cuda_matches_the_plain_stack_in_float32(dropout):
    torch.manual_seed(0)
    seq = stack(["lsh", "local", "lsh", "full"], dropout, engine=FastEngine()).to(CUDA).train()
    x, mask = (t.to(CUDA) for t in inputs(torch.float32))
    fast = run(seq, x, mask, reversible=True)
    assert_same(run(plain_reference(seq), x, mask, reversible=False), fast, tol=1e-4)


def test_reversible_stack_on_cuda_under_bf16_autocast_matches_the_plain_stack():
    torch.manual_seed(0)
    seq = stack(["lsh", "local", "full"], 0.0, engine=FastEngine()).to(CUDA).train()
    x, mask = (t.to(CUDA) for t in inputs(torch.float32))
    fast = run_autocast(seq, x, mask, True)
    errors = [relative_error(f, p) for f, p in zip(fast, run_autocast(plain_reference(seq), x, mask, False))]
    assert max(errors) <= 1e-2, max(errors)


@pytest.mark.parametrize("factors", [(10,), (14, 12)], ids=["one rotation", "factorised"])
def test_hashing_on_cuda_is_fixed_by_the_seed_and_is_the_argmax_definition(factors):
    x = torch.randn(2, 3, 300, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    buckets = hash_buckets(x.float().to(CUDA), factors, 4, seed=7)
    assert torch.equal(hash_buckets(x.float().to(CUDA), factors, 4, seed=7), buckets)
    assert (hash_buckets(x.float().to(CUDA), factors, 4, seed=8) != buckets).float().mean() > 0.5
    expected, margin = hash_by_definition(x, factors, 4, seed=7)
    clear = margin > 1e-4  # float32 rounding of a projection of 16 unit-scale terms is ~1e-6
    assert clear.float().mean() > 0.99
    assert torch.equal(buckets.cpu()[clear], expected[clear])


def test_lsh_layer_on_cuda_hashes_the_same_with_its_seed_in_any_batch():
    """A fixed hash_seed gives one sort order per sequence, call after call, alone or batched with another."""
    m = module(d=32, heads=2, bucket_size=16, n_hashes=3, seed=3, dtype=torch.float32).to(CUDA)
    x = torch.randn(2, 150, 32, generator=torch.Generator().manual_seed(4)).to(CUDA)
    with torch.no_grad():
        both = m.hashed(x).order
        assert torch.equal(m.hashed(x).order, both)
        assert torch.equal(m.hashed(x[1:]).order, both[1:])
