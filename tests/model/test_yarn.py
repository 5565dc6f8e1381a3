"""YaRN on the MLA rotary part (model.layers): the pure functions and the model built with them."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from configs.model import RopeScalingConfig, tiny_model
from model.hybrid import HybridForCausalLM, set_rope_scaling
from model.layers import RotaryEmbedding, rope_inv_freq, yarn_inv_freq, yarn_mscale


def test_factor_one_is_plain_rope_exactly():
    plain = rope_inv_freq(64, 10000.0)
    assert torch.equal(yarn_inv_freq(64, 10000.0, 1.0, 4096), plain)
    positions = torch.arange(300)[None]
    scaled = RotaryEmbedding(64, 1.0, 10000.0, RopeScalingConfig(factor=1.0, original_max_position_embeddings=4096))
    for ours, reference in zip(
        scaled(positions, torch.float32), RotaryEmbedding(64, 1.0, 10000.0)(positions, torch.float32), strict=True
    ):
        assert torch.equal(ours, reference)


def test_high_frequencies_kept_low_frequencies_divided_by_the_factor():
    dim, theta, original, factor = 64, 10000.0, 4096, 8.0
    plain, scaled = rope_inv_freq(dim, theta), yarn_inv_freq(dim, theta, factor, original)
    turns = plain * original / (2 * math.pi)  # full turns over the original context, per frequency
    fast, slow = turns > 32, turns < 1
    assert fast.any() and slow.any() and (~fast & ~slow).any()
    assert torch.equal(scaled[fast], plain[fast])
    torch.testing.assert_close(scaled[slow], plain[slow] / factor, rtol=1e-6, atol=0)
    # The ramp: every frequency between, divided by something in [1, s], more so the slower it turns.
    ratio = plain / scaled
    assert torch.all(ratio >= 1 - 1e-6) and torch.all(ratio <= factor + 1e-5)
    assert torch.all(ratio[1:] >= ratio[:-1] - 1e-6)


def test_mscale_is_yarns_temperature():
    assert yarn_mscale(1.0) == 1.0 and yarn_mscale(0.5) == 1.0
    assert yarn_mscale(8.0) == pytest.approx(0.1 * math.log(8.0) + 1)
    assert yarn_mscale(64.0, mscale=0.707) == pytest.approx(0.1 * 0.707 * math.log(64.0) + 1)
    # DeepSeek-V3's split: cos/sin carry mscale(m) / mscale(m_all), the softmax scale mscale(m_all)².
    both = RopeScalingConfig(factor=8.0, original_max_position_embeddings=128)
    assert RotaryEmbedding(16, 1.0, 1e4, both).attention_factor() == 1.0
    rope_only = dataclasses.replace(both, mscale_all_dim=0.0)
    assert RotaryEmbedding(16, 1.0, 1e4, rope_only).attention_factor() == pytest.approx(0.1 * math.log(8) + 1)


def test_model_mla_scale_and_table_follow_the_scaling():
    config = dataclasses.replace(tiny_model(), max_position_embeddings=1024)
    torch.manual_seed(0)
    model = HybridForCausalLM(config).eval()
    ids = torch.randint(0, config.vocab_size, (1, 200))
    with torch.no_grad():
        plain = model(ids).logits
        set_rope_scaling(model, RopeScalingConfig(factor=1.0, original_max_position_embeddings=128))
        assert torch.equal(model(ids).logits, plain)  # scale 1 == unscaled, through the whole model
        scaling = RopeScalingConfig(factor=8.0, original_max_position_embeddings=128)
        set_rope_scaling(model, scaling)
        scaled = model(ids).logits
    mla = [m for m in model.modules() if type(m).__name__ == "MultiLatentAttention"]
    qk_dim = config.qk_nope_head_dim + config.qk_rope_head_dim
    assert mla and all(m.scale == pytest.approx(qk_dim**-0.5 * yarn_mscale(8.0) ** 2) for m in mla)
    assert not torch.allclose(scaled, plain)
    # The same weights built from a config that carries the scaling compute the same function.
    rebuilt = HybridForCausalLM(dataclasses.replace(config, rope_scaling=scaling)).eval()
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(ids).logits, scaled)
