"""Workspace: named buffers reused across calls, scoped per caller, released on request."""
from __future__ import annotations

import torch

from genoformer.model.fast import workspace as ws_module
from genoformer.model.fast.workspace import Workspace


def test_a_name_reuses_its_buffer_and_grows_when_too_small():
    ws = Workspace(torch.device("cpu"))
    a = ws.get("x", (4, 8), torch.float32)
    b = ws.get("x", (2, 8), torch.float32)
    assert b.data_ptr() == a.data_ptr() and b.shape == (2, 8)
    c = ws.get("x", (8, 8), torch.float32)  # larger: a new buffer
    assert c.shape == (8, 8) and ws.get("x", (8, 8), torch.float32).data_ptr() == c.data_ptr()
    assert ws.get("x", (8, 8), torch.float64).dtype == torch.float64  # another dtype: another buffer
    assert ws.get("y", (2, 8), torch.float32).data_ptr() != ws.get("x", (2, 8), torch.float32).data_ptr()


def test_rows_copies_only_what_is_not_contiguous():
    ws = Workspace(torch.device("cpu"))
    t = torch.arange(24.0).view(4, 6)
    assert ws.rows(t, "r") is t
    strided = t.t()
    copy = ws.rows(strided, "r")
    assert copy.is_contiguous() and torch.equal(copy, strided) and copy.data_ptr() != t.data_ptr()


def test_a_scope_shares_large_buffers_under_its_prefix_and_keeps_small_ones(monkeypatch):
    monkeypatch.setattr(ws_module, "SHARED_BYTES", 64)
    outer = Workspace(torch.device("cpu"))
    inner = outer.scope("kernel.")
    large, small = inner.get("a", (16,), torch.float32), inner.get("b", (4,), torch.float32)  # 64 and 16 bytes
    assert set(outer.buffers) == {"kernel.a"} and set(inner.buffers) == {"b"}
    assert outer.scope("kernel.").get("a", (16,), torch.float32).data_ptr() == large.data_ptr()
    assert outer.scope("other.").get("a", (16,), torch.float32).data_ptr() != large.data_ptr()
    assert small.numel() == 4
    outer.release("kernel.")
    assert set(outer.buffers) == {"other.a"}


def test_arange_is_made_once():
    ws = Workspace(torch.device("cpu"))
    a = ws.arange(10)
    assert torch.equal(a, torch.arange(10)) and ws.arange(5).data_ptr() == a.data_ptr()
