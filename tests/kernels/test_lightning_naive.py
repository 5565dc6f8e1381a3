"""The two pure-torch forms of Lightning attention agree, and the torch path of ``lightning_attn``
is exactly the naive reference."""

import pytest
import torch

from kernels.lightning import lightning_attn, naive_chunk_lightning, naive_recurrent_lightning
from kernels.testing import assert_close

# Fast, medium and slow heads; -3.0 makes λ^16 ≈ 1e-21, which would overflow if any positive power
# of λ^-1 were ever evaluated.
G_H = torch.tensor([-3.0, -0.25, -0.01])


def _inputs(B, T, H, K, V, dtype, with_state, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(B, T, H, K, generator=gen, dtype=dtype)
    k = torch.randn(B, T, H, K, generator=gen, dtype=dtype)
    v = torch.randn(B, T, H, V, generator=gen, dtype=dtype)
    h0 = torch.randn(B, H, K, V, generator=gen, dtype=dtype) if with_state else None
    return q, k, v, h0


@pytest.mark.parametrize("with_state", [False, True])
@pytest.mark.parametrize("T", [1, 15, 16, 17, 63])
@pytest.mark.parametrize("chunk_size", [16, 5])
def test_chunk_equals_recurrent(T, with_state, chunk_size):
    q, k, v, h0 = _inputs(2, T, 3, 8, 12, torch.float64, with_state)
    g = G_H.double()
    o_ref, ht_ref = naive_recurrent_lightning(q, k, v, g, initial_state=h0, output_final_state=True)
    o, ht = naive_chunk_lightning(q, k, v, g, initial_state=h0, output_final_state=True, chunk_size=chunk_size)
    assert_close("o", o_ref, o, 1e-12)
    assert_close("final state", ht_ref, ht, 1e-12)


@pytest.mark.parametrize("T", [17, 63])
def test_chunk_equals_recurrent_gradients(T):
    inputs = _inputs(1, T, 3, 8, 8, torch.float64, with_state=True, seed=1)
    grads = []
    for fn in (naive_recurrent_lightning, naive_chunk_lightning):
        leaves = [x.clone().requires_grad_() for x in inputs]
        q, k, v, h0 = leaves
        o, ht = fn(q, k, v, G_H.double(), initial_state=h0, output_final_state=True)
        (o.sin().sum() + ht.cos().sum()).backward()
        grads.append([x.grad for x in leaves])
    for name, ref, out in zip(("dq", "dk", "dv", "dh0"), *grads, strict=True):
        assert_close(name, ref, out, 1e-12)


def test_state_is_fp32_and_output_keeps_dtype():
    q, k, v, _ = _inputs(1, 5, 3, 8, 8, torch.bfloat16, with_state=False)
    for fn in (naive_recurrent_lightning, naive_chunk_lightning):
        o, ht = fn(q, k, v, G_H, output_final_state=True)
        assert o.dtype == torch.bfloat16 and ht.dtype == torch.float32
        assert fn(q, k, v, G_H)[1] is None


def test_default_scale_is_inverse_sqrt_head_dim():
    q, k, v, _ = _inputs(1, 9, 3, 16, 8, torch.float64, with_state=False)
    o_default, _ = naive_recurrent_lightning(q, k, v, G_H.double())
    o_explicit, _ = naive_recurrent_lightning(q, k, v, G_H.double(), scale=0.25)
    assert_close("o", o_explicit, o_default, 1e-15)


def test_torch_path_of_lightning_attn_is_the_reference(monkeypatch):
    monkeypatch.delenv("LING26_FORCE_TRITON", raising=False)
    q, k, v, h0 = _inputs(2, 40, 3, 8, 8, torch.float32, with_state=True)
    o_ref, ht_ref = naive_chunk_lightning(q, k, v, G_H, initial_state=h0, output_final_state=True, chunk_size=64)
    for mode in ("auto", "chunk"):
        o, ht = lightning_attn(q, k, v, G_H, initial_state=h0, output_final_state=True, mode=mode)
        torch.testing.assert_close(o, o_ref, rtol=0, atol=0)
        torch.testing.assert_close(ht, ht_ref, rtol=0, atol=0)
    o_rec, _ = naive_recurrent_lightning(q, k, v, G_H, initial_state=h0)
    o, _ = lightning_attn(q, k, v, G_H, initial_state=h0, mode="fused_recurrent")
    torch.testing.assert_close(o, o_rec, rtol=0, atol=0)


def test_bad_inputs_fail_loudly():
    q, k, v, h0 = _inputs(2, 5, 3, 8, 12, torch.float32, with_state=True)
    with pytest.raises(ValueError, match="mode"):
        lightning_attn(q, k, v, G_H, mode="parallel")
    with pytest.raises(ValueError, match="g must be"):
        naive_recurrent_lightning(q, k, v, G_H[:2])
    with pytest.raises(ValueError, match="v must be"):
        naive_chunk_lightning(q, k, v[:, :4], G_H)
    with pytest.raises(ValueError, match="initial_state"):
        naive_chunk_lightning(q, k, v, G_H, initial_state=h0.transpose(-1, -2))
    with pytest.raises(ValueError, match="k must match"):
        naive_recurrent_lightning(q, k[..., :4], v, G_H)


@pytest.mark.parametrize(("T", "expected"), [(1, "lightning_decode_step"), (2, "naive_chunk_lightning")])
def test_torch_auto_mode_decodes_one_token_recurrently(T, expected, monkeypatch):
    """On the torch path "auto" takes the one-token recurrent step for decode only (few ops), the chunk
    form otherwise (a Python loop over chunks, not tokens); both give the reference output."""
    import kernels.lightning.api as api_module

    calls = []
    for name in ("lightning_decode_step", "naive_recurrent_lightning", "naive_chunk_lightning"):
        real = getattr(api_module, name)
        monkeypatch.setattr(
            api_module, name, lambda *a, _real=real, _name=name, **kw: calls.append(_name) or _real(*a, **kw)
        )
    q, k, v, h0 = _inputs(2, T, 3, 8, 8, torch.float64, True)
    o, ht = lightning_attn(q, k, v, G_H.double(), initial_state=h0, output_final_state=True)
    o_ref, ht_ref = naive_recurrent_lightning(q, k, v, G_H.double(), initial_state=h0, output_final_state=True)
    assert calls == [expected]
    torch.testing.assert_close(o, o_ref)
    torch.testing.assert_close(ht, ht_ref)
