"""Partial RoPE and the QK-norm -> RoPE order of the Ling-2.0 attention."""

import math

import torch
import torch.nn.functional as F

from model.attention import Attention
from model.layers import RotaryEmbedding, apply_partial_rotary


def test_partial_rotary_rotates_pairs_and_passes_the_rest():
    head_dim, rotary_dim, theta = 8, 4, 10000.0
    rope = RotaryEmbedding(head_dim, partial_rotary_factor=0.5, theta=theta)
    positions = torch.tensor([[0, 1, 5]])
    cos, sin = rope(positions, torch.float32)
    x = torch.randn(1, 2, 3, head_dim)  # [B, H, T, K]
    y = apply_partial_rotary(x, cos, sin)

    assert torch.equal(y[..., rotary_dim:], x[..., rotary_dim:])
    # Rotate-half pairs dim i with dim i + R/2 and turns the pair by position * theta^(-2i/R).
    half = rotary_dim // 2
    for i in range(half):
        angle = positions[0].float() * theta ** (-2 * i / rotary_dim)
        a, b = x[..., i], x[..., i + half]
        torch.testing.assert_close(y[..., i], a * angle.cos() - b * angle.sin())
        torch.testing.assert_close(y[..., i + half], b * angle.cos() + a * angle.sin())
    torch.testing.assert_close(y[:, :, 0], x[:, :, 0])  # position 0 is the identity


def reference_attention(attn: Attention, x, cos, sin, norm_first: bool) -> torch.Tensor:
    """Unfused GQA attention written out, with the QK-norm before (official) or after the rotation."""
    B, T, _ = x.shape
    H, G, K = attn.num_heads, attn.num_kv_heads, attn.head_dim
    q, k, v = attn.query_key_value(x).view(B, T, H + 2 * G, K).transpose(1, 2).split([H, G, G], dim=1)

    def rms(t, norm):
        return t * torch.rsqrt(t.pow(2).mean(-1, keepdim=True) + 1e-6) * norm.weight

    if norm_first:
        q, k = rms(q, attn.query_layernorm), rms(k, attn.key_layernorm)
    q, k = apply_partial_rotary(q, cos, sin), apply_partial_rotary(k, cos, sin)
    if not norm_first:
        q, k = rms(q, attn.query_layernorm), rms(k, attn.key_layernorm)
    k, v = k.repeat_interleave(H // G, dim=1), v.repeat_interleave(H // G, dim=1)
    scores = q @ k.transpose(-1, -2) / math.sqrt(K)
    scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
    y = F.softmax(scores, dim=-1) @ v
    return attn.dense(y.transpose(1, 2).reshape(B, T, H * K))


def test_attention_normalises_qk_before_partial_rope(cfg):
    torch.manual_seed(0)
    attn = Attention(cfg, layer_idx=0)
    with torch.no_grad():
        # Per-dim gains make the two orders differ (RMS itself is rotation invariant).
        attn.query_layernorm.weight.uniform_(0.5, 1.5)
        attn.key_layernorm.weight.uniform_(0.5, 1.5)
    x = torch.randn(2, 7, cfg.hidden_size)
    cos, sin = RotaryEmbedding(cfg.head_dim, cfg.partial_rotary_factor, cfg.rope_theta)(
        torch.arange(7)[None].expand(2, 7), torch.float32
    )
    with torch.no_grad():
        y = attn(x, cos, sin, None, None)
        torch.testing.assert_close(y, reference_attention(attn, x, cos, sin, norm_first=True))
        assert not torch.allclose(y, reference_attention(attn, x, cos, sin, norm_first=False), atol=1e-4)


def test_one_token_decode_with_grouped_rows_equals_full_attention(cfg):
    """Decode folds the H / G query heads of a key/value head into that head's query rows (one SDPA pass per
    key/value head); the last token decoded against the cache equals full causal attention's last row."""
    from model.attention import KVCache

    torch.manual_seed(0)
    attn = Attention(cfg, layer_idx=0)
    x = torch.randn(2, 7, cfg.hidden_size)
    cos, sin = RotaryEmbedding(cfg.head_dim, cfg.partial_rotary_factor, cfg.rope_theta)(
        torch.arange(7)[None].expand(2, 7), torch.float32
    )
    cache = KVCache()
    with torch.no_grad():
        attn(x[:, :6], cos[:, :6], sin[:, :6], None, cache)
        y_last = attn(x[:, 6:], cos[:, 6:], sin[:, 6:], None, cache)
        torch.testing.assert_close(y_last, reference_attention(attn, x, cos, sin, norm_first=True)[:, 6:])


def test_grouped_rows_decode_honours_the_padding_mask(cfg):
    from model.attention import grouped_rows_decode

    torch.manual_seed(0)
    H, G, K = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    q, k, v = torch.randn(3, H, 1, K), torch.randn(3, G, 9, K), torch.randn(3, G, 9, K)
    bias = torch.zeros(3, 1, 1, 9)
    bias[0, ..., :4] = torch.finfo(torch.float32).min  # row 0 is left-padded by 4
    expected = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, enable_gqa=True)
    torch.testing.assert_close(grouped_rows_decode(q, k, v, bias), expected)
    assert not torch.allclose(grouped_rows_decode(q, k, v, None)[0], expected[0], atol=1e-4)


def test_joint_qk_norm_and_rotary_equals_separate_ones(cfg):
    from model.layers import RMSNorm, qk_norm_rotary

    torch.manual_seed(0)
    H, G, K = 4, 2, cfg.head_dim
    q_norm, k_norm = RMSNorm(K, 1e-6), RMSNorm(K, 1e-6)
    with torch.no_grad():
        q_norm.weight.uniform_(0.5, 1.5)
        k_norm.weight.uniform_(0.5, 1.5)
    qk = torch.randn(2, 5, H + G, K)
    cos, sin = RotaryEmbedding(K, cfg.partial_rotary_factor, cfg.rope_theta)(
        torch.arange(5)[None].expand(2, 5), torch.float32
    )
    with torch.no_grad():
        joint = qk_norm_rotary(qk, (q_norm, k_norm), H, cos, sin)
        q_sep = apply_partial_rotary(q_norm(qk[:, :, :H]).transpose(1, 2), cos, sin)
        k_sep = apply_partial_rotary(k_norm(qk[:, :, H:]).transpose(1, 2), cos, sin)
        torch.testing.assert_close(joint, torch.cat((q_sep, k_sep), dim=1))
        torch.testing.assert_close(
            qk_norm_rotary(qk, None, H, cos, sin), apply_partial_rotary(qk.transpose(1, 2), cos, sin)
        )
