"""MLA layer: absorbed == naive, latent-only cache, cached decode == full, parity with transformers' DeepSeek-V3."""

import dataclasses

import pytest
import torch

from model.attention import attention_bias
from model.hybrid_cache import HybridCache
from model.layers import RotaryEmbedding
from model.mla import MultiLatentAttention

# Relative RMS error ‖ours − DeepseekV3Attention‖ / ‖DeepseekV3Attention‖ in fp32. Measured: ~1.3e-7 for the
# naive path and ~3e-7 for the absorbed one (max abs 2e-6 / 4e-6 on outputs of magnitude ~10): rounding only.
DEEPSEEK_PARITY_REL = 1e-6


def rotary(cfg, T: int, B: int = 2, start: int = 0):
    positions = torch.arange(start, start + T)[None].expand(B, -1)
    return RotaryEmbedding(cfg.qk_rope_head_dim, 1.0, cfg.rope_theta)(positions, torch.float32)


def make_mla(cfg, seed: int = 0, **overrides) -> MultiLatentAttention:
    torch.manual_seed(seed)
    mla = MultiLatentAttention(dataclasses.replace(cfg, **overrides), layer_idx=3).eval()
    with torch.no_grad():
        for p in mla.parameters():
            p.normal_(0, 0.2) if p.dim() > 1 else p.uniform_(0.5, 1.5)
    return mla


@pytest.mark.parametrize("q_lora_rank", [48, None])
def test_absorbed_equals_naive(cfg, q_lora_rank):
    mla = make_mla(cfg, q_lora_rank=q_lora_rank)
    x = torch.randn(2, 9, cfg.hidden_size)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1, 1, 1, 1], [1] * 9])
    for bias in (None, attention_bias(mask, 9, 0, torch.float32, x.device)):
        with torch.no_grad():
            naive = mla(x, *rotary(cfg, 9), bias, None, absorb=False)
            absorbed = mla(x, *rotary(cfg, 9), bias, None, absorb=True)
        torch.testing.assert_close(absorbed, naive, rtol=1e-5, atol=1e-5)


def test_latent_cache_and_absorbed_decode_equal_the_full_forward(cfg):
    mla = make_mla(cfg)
    T, prompt = 12, 8
    x = torch.randn(2, T, cfg.hidden_size)
    with torch.no_grad():
        full = mla(x, *rotary(cfg, T), None, None)
        cache = HybridCache()
        outs = [mla(x[:, :prompt], *rotary(cfg, prompt), None, cache)]
        for t in range(prompt, T):
            bias = attention_bias(None, 1, t, torch.float32, x.device)
            outs.append(mla(x[:, t : t + 1], *rotary(cfg, 1, start=t), bias, cache))
    torch.testing.assert_close(torch.cat(outs, 1), full, rtol=1e-5, atol=1e-5)
    # Only [c_kv ; k_rope] per token: kv_lora_rank + qk_rope_head_dim numbers, no per-head keys or values.
    assert cache.latents[3].tensor.shape == (2, T, cfg.kv_lora_rank + cfg.qk_rope_head_dim)
    assert not cache.states


def deepseek_attention(cfg, ours: MultiLatentAttention):
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3Attention, DeepseekV3RotaryEmbedding

    config = DeepseekV3Config(
        vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_attention_heads, q_lora_rank=ours.q_lora_rank, kv_lora_rank=cfg.kv_lora_rank,
        qk_rope_head_dim=cfg.qk_rope_head_dim, qk_nope_head_dim=cfg.qk_nope_head_dim, v_head_dim=cfg.v_head_dim,
        rope_interleave=True, attention_bias=False, rms_norm_eps=cfg.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": cfg.rope_theta},
    )  # fmt: skip
    config._attn_implementation = "eager"
    theirs = DeepseekV3Attention(config, layer_idx=0).eval()
    state = {name.replace("dense.", "o_proj."): t for name, t in ours.state_dict().items()}
    theirs.load_state_dict(state, strict=True)
    return theirs, DeepseekV3RotaryEmbedding(config)


@pytest.mark.parametrize("q_lora_rank", [48, None])
def test_parity_with_transformers_deepseek_v3_attention(cfg, q_lora_rank):
    ours = make_mla(cfg, q_lora_rank=q_lora_rank)
    theirs, their_rotary = deepseek_attention(cfg, ours)
    T = 11
    x = torch.randn(2, T, cfg.hidden_size)
    positions = torch.arange(T)[None].expand(2, -1)
    causal = torch.full((T, T), torch.finfo(torch.float32).min).triu(1)[None, None]
    with torch.no_grad():
        cos, sin = their_rotary(x, positions)
        ref, _ = theirs(x, (cos, sin), causal)
        torch.testing.assert_close(cos, rotary(cfg, T)[0])
        naive = ours(x, *rotary(cfg, T), None, None, absorb=False)
        absorbed = ours(x, *rotary(cfg, T), None, None, absorb=True)
    assert ((naive - ref).norm() / ref.norm()).item() < DEEPSEEK_PARITY_REL
    assert ((absorbed - ref).norm() / ref.norm()).item() < 2 * DEEPSEEK_PARITY_REL
