"""The Triton kernels (run by the interpreter on CPU) against the naive reference: outputs, final state
and the gradients of q, k, v and the initial state, by relative RMS error, with ``torch.empty`` poisoned
so an unwritten output shows up as NaN."""

import pytest
import torch

import kernels.lightning.api as api_module
import kernels.lightning.chunk as chunk_module
from kernels.lightning import (
    chunk_lightning_attn,
    fused_recurrent_lightning_attn,
    lightning_attn,
    naive_recurrent_lightning,
)
from kernels.testing import assert_close, relative_rms_error

pytestmark = pytest.mark.usefixtures("triton_cpu")

OUT_TOL, GRAD_TOL = 5e-3, 2e-2
G_H = torch.tensor([-3.0, -0.25, -0.01])


def _leaves(B, T, H, K, V, with_state, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=gen)
    k = torch.randn(B, T, H, K, generator=gen)
    v = torch.randn(B, T, H, V, generator=gen)
    h0 = torch.randn(B, H, K, V, generator=gen) if with_state else None
    return q, k, v, h0


def _run(fn, inputs, g, dtype, **kwargs):
    """Forward with the final state, backward through both outputs; returns (o, ht, grads).
    q, k, v are cast to ``dtype``; the state stays fp32 as the kernels expect."""
    leaves = [None if x is None else x.clone().requires_grad_() for x in inputs]
    q, k, v, h0 = leaves
    o, ht = fn(q.to(dtype), k.to(dtype), v.to(dtype), g, initial_state=h0, output_final_state=True, **kwargs)
    gen = torch.Generator().manual_seed(123)
    do, dht = torch.randn(o.shape, generator=gen), torch.randn(ht.shape, generator=gen)
    ((o.float() * do).sum() + (ht * dht).sum()).backward()
    return o, ht, [None if x is None else x.grad for x in leaves]


def _check_against_reference(fn, inputs, g, dtype=torch.float32, **kwargs):
    # The reference sees the same rounded inputs, so only the kernel's own error is measured.
    rounded = [None if x is None else x.to(dtype).float() for x in inputs[:3]] + [inputs[3]]
    o_ref, ht_ref, grads_ref = _run(naive_recurrent_lightning, rounded, g, torch.float32)
    o, ht, grads = _run(fn, inputs, g, dtype, **kwargs)
    assert o.dtype == dtype and ht.dtype == torch.float32
    assert_close("o", o_ref, o, OUT_TOL)
    assert_close("final state", ht_ref, ht, OUT_TOL)
    for name, ref, out in zip(("dq", "dk", "dv", "dh0"), grads_ref, grads, strict=True):
        if ref is not None:
            assert_close(name, ref, out, GRAD_TOL)


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("T", [1, 15, 16, 17, 63])
def test_chunk_matches_reference(T, with_state):
    _check_against_reference(chunk_lightning_attn, _leaves(2, T, 3, 16, 32, with_state), G_H, chunk_size=16)


def test_chunk_multi_tile_head_dims():
    # K = 72 and V = 96 exceed one 64-wide tile and are not multiples of it.
    g = torch.tensor([-1.5, -0.01])
    _check_against_reference(chunk_lightning_attn, _leaves(1, 40, 2, 72, 96, True), g, chunk_size=32)


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("T", [1, 15, 16, 17, 63])
def test_fused_recurrent_matches_reference(T, with_state):
    _check_against_reference(fused_recurrent_lightning_attn, _leaves(2, T, 3, 16, 32, with_state), G_H)


def test_fused_recurrent_splits_value_dim():
    # V = 96 spans two value slices, whose dq / dk partials must be summed.
    _check_against_reference(fused_recurrent_lightning_attn, _leaves(1, 9, 3, 24, 96, True), G_H)


@pytest.mark.parametrize("fn", [chunk_lightning_attn, fused_recurrent_lightning_attn])
def test_half_precision_inputs(fn):
    # bf16 is checked on a GPU only (benchmarks/gpu_lightning.py): the interpreter multiplies the raw
    # bit patterns of bf16 tl.dot operands (triton-lang/triton#11584), so fp16 stands in for it here.
    kwargs = {"chunk_size": 16} if fn is chunk_lightning_attn else {}
    _check_against_reference(fn, _leaves(1, 33, 3, 16, 32, True), G_H, dtype=torch.float16, **kwargs)


def test_poisoned_empty_catches_an_unwritten_output(monkeypatch):
    # The harness itself: if the output kernel never runs, the NaN-filled buffer must fail the check.
    class SkippedLaunch:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: None

    monkeypatch.setattr(chunk_module, "_chunk_fwd_o_kernel", SkippedLaunch())
    q, k, v, _ = _leaves(1, 4, 3, 16, 16, False)
    o, _ = chunk_lightning_attn(q, k, v, G_H, chunk_size=16)
    assert torch.isnan(o).all()
    assert relative_rms_error(naive_recurrent_lightning(q, k, v, G_H)[0], o) == float("inf")


def test_without_final_state_gradient():
    q, k, v, h0 = (x.clone().requires_grad_() for x in _leaves(1, 17, 3, 16, 16, True))
    o, ht = chunk_lightning_attn(q, k, v, G_H, initial_state=h0, chunk_size=16)
    assert ht is None
    o.sum().backward()
    q2, k2, v2, h02 = (x.detach().clone().requires_grad_() for x in (q, k, v, h0))
    naive_recurrent_lightning(q2, k2, v2, G_H, initial_state=h02)[0].sum().backward()
    for name, ref, out in zip(("dq", "dk", "dv", "dh0"), (q2, k2, v2, h02), (q, k, v, h0), strict=True):
        assert_close(name, ref.grad, out.grad, GRAD_TOL)


def test_chunk_prefill_then_recurrent_decode_equals_full_pass():
    q, k, v, h0 = _leaves(2, 20, 3, 16, 16, True)
    o_full, ht_full = naive_recurrent_lightning(q, k, v, G_H, initial_state=h0, output_final_state=True)
    o_prefill, state = chunk_lightning_attn(
        q[:, :17], k[:, :17], v[:, :17], G_H, initial_state=h0, output_final_state=True, chunk_size=16
    )
    decoded = []
    for t in range(17, 20):
        o_t, state = fused_recurrent_lightning_attn(
            q[:, t : t + 1], k[:, t : t + 1], v[:, t : t + 1], G_H, initial_state=state, output_final_state=True
        )
        decoded.append(o_t)
    assert_close("o", o_full, torch.cat([o_prefill, *decoded], dim=1), OUT_TOL)
    assert_close("final state", ht_full, state, OUT_TOL)


@pytest.mark.parametrize("mode", ["auto", "chunk", "fused_recurrent"])
def test_lightning_attn_dispatches_to_triton(mode, monkeypatch):
    calls = []
    for name in ("chunk_lightning_attn", "fused_recurrent_lightning_attn"):
        real = getattr(api_module, name)

        def recorded(*args, _real=real, _name=name, **kwargs):
            calls.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(api_module, name, recorded)
    inputs = _leaves(1, 17, 3, 16, 16, True)
    o_ref, _ = naive_recurrent_lightning(*inputs[:3], G_H, initial_state=inputs[3])
    o, _ = lightning_attn(*inputs[:3], G_H, initial_state=inputs[3], mode=mode, chunk_size=16)
    assert_close("o", o_ref, o, OUT_TOL)
    assert calls == ["chunk_lightning_attn" if mode == "chunk" else "fused_recurrent_lightning_attn"]


def test_chunk_size_must_suit_tl_dot():
    q, k, v, _ = _leaves(1, 4, 3, 16, 16, False)
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_lightning_attn(q, k, v, G_H, chunk_size=24)
