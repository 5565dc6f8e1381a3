"""Lightning attention layer: chunked == recurrent, the torch and kernels paths agree, the decay rules, padding."""

import dataclasses

import pytest
import torch

from kernels.lightning import lightning_log_decay as kernels_log_decay
from kernels.lightning import naive_recurrent_lightning
from model.hybrid_cache import HybridCache
from model.layers import RotaryEmbedding
from model.lightning_attention import GroupRMSNorm, LightningAttention, lightning_log_decay, torch_lightning_attn


def rel_err(ref: torch.Tensor, out: torch.Tensor) -> float:
    return ((ref - out).norm() / ref.norm()).item()


def rotary(cfg, T: int, B: int = 2, start: int = 0):
    positions = torch.arange(start, start + T)[None].expand(B, -1)
    return RotaryEmbedding(cfg.head_dim, cfg.partial_rotary_factor, cfg.rope_theta)(positions, torch.float32)


@pytest.mark.parametrize("T", [7, 16, 37])  # below, at and above the chunk
def test_torch_chunked_equals_recurrent_definition(T):
    gen = torch.Generator().manual_seed(T)
    B, H, K = 2, 4, 8
    q, k, v = (torch.randn(B, T, H, K, generator=gen) for _ in range(3))
    g = torch.tensor(lightning_log_decay(H, 1, 4))
    state0 = torch.randn(B, H, K, K, generator=gen)
    ref_o, ref_s = naive_recurrent_lightning(q, k, v, g, scale=K**-0.5, initial_state=state0, output_final_state=True)
    o, s = torch_lightning_attn(q, k, v, g, K**-0.5, initial_state=state0, chunk_size=16)
    assert rel_err(ref_o, o) < 1e-5 and rel_err(ref_s, s) < 1e-5
    assert s.dtype == torch.float32


@pytest.mark.parametrize("T", [7, 16, 37])
@pytest.mark.parametrize("linear_silu", [False, True])
def test_layer_prefill_equals_token_by_token_decode(cfg, T, linear_silu):
    torch.manual_seed(0)
    layer = LightningAttention(dataclasses.replace(cfg, linear_silu=linear_silu), layer_idx=1).eval()
    x = torch.randn(2, T, cfg.hidden_size)
    with torch.no_grad():
        full_cache = HybridCache()
        full = layer(x, *rotary(cfg, T), None, full_cache)
        step_cache = HybridCache()
        steps = [layer(x[:, t : t + 1], *rotary(cfg, 1, start=t), None, step_cache) for t in range(T)]
    assert rel_err(full, torch.cat(steps, 1)) < 1e-5
    assert rel_err(full_cache.get_state(1), step_cache.get_state(1)) < 1e-5


def test_torch_and_kernels_paths_agree_forward_and_backward(cfg):
    torch.manual_seed(0)
    layer = LightningAttention(cfg, layer_idx=2)
    x = torch.randn(2, 37, cfg.hidden_size)
    results = {}
    for backend in ("torch", "kernels"):
        layer.backend = backend
        layer.zero_grad()
        x_in = x.clone().requires_grad_()
        out = layer(x_in, *rotary(cfg, 37), None, None)
        out.pow(2).sum().backward()
        results[backend] = (out.detach(), x_in.grad, layer.query_key_value.weight.grad.clone())
    for ref, got in zip(results["kernels"], results["torch"], strict=True):
        assert rel_err(ref, got) < 1e-5


@pytest.mark.parametrize("rule", ["official", "vllm"])
@pytest.mark.parametrize(("H", "L"), [(4, 4), (6, 8), (64, 80)])
def test_decay_is_the_kernels_rule(rule, H, L):
    for layer_idx in (0, 1, L // 2, L - 1):
        ours = torch.tensor(lightning_log_decay(H, layer_idx, L, rule))
        assert torch.equal(ours, kernels_log_decay(H, layer_idx, L, rule))
        assert (ours < 0).all()


def test_group_rms_norm_normalises_each_group_separately():
    norm = GroupRMSNorm(12, groups=3, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.linspace(0.5, 2.0, 12))
    x = torch.randn(5, 12) * torch.tensor([1.0] * 4 + [10.0] * 4 + [0.1] * 4)
    parts = [p / p.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt() for p in x.split(4, dim=-1)]
    torch.testing.assert_close(norm(x), torch.cat(parts, -1) * norm.weight)
    with pytest.raises(ValueError, match="divisible"):
        GroupRMSNorm(10, groups=3, eps=1e-6)


def test_left_padding_adds_nothing_to_the_state(cfg):
    torch.manual_seed(0)
    layer = LightningAttention(cfg, layer_idx=0).eval()
    pad, T = 5, 11
    x = torch.randn(1, T, cfg.hidden_size)
    padded = torch.cat((torch.randn(1, pad, cfg.hidden_size) * 3, x), dim=1)
    mask = torch.cat((torch.zeros(1, pad), torch.ones(1, T)), dim=1)
    cos, sin = rotary(cfg, T, B=1)
    # A left-padded row sees the positions of its real tokens (counted from its first real token).
    cos_p, sin_p = (torch.cat((t[:, :1].expand(-1, pad, -1), t), dim=1) for t in (cos, sin))
    with torch.no_grad():
        ref_cache, pad_cache = HybridCache(), HybridCache()
        ref = layer(x, cos, sin, None, ref_cache)
        out = layer(padded, cos_p, sin_p, mask, pad_cache)
    torch.testing.assert_close(out[:, pad:], ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(pad_cache.get_state(0), ref_cache.get_state(0), rtol=1e-5, atol=1e-6)
