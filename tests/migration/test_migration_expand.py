"""Step 1 (Lightning conversion): head expansion by kv_init, new-parameter init, bit-identical shared weights,
and the intermediate model (softmax layers still GQA) equal to the base where nothing was converted."""

import dataclasses

import pytest
import torch

from configs.base import ConfigError
from model.hybrid_cache import HybridCache
from model.lightning_attention import LightningAttention
from model.migration import InterimGQAAttention, expand_qkv, gqa_to_hybrid, softmax_layer_indices


def lightning_layers(model) -> dict[int, LightningAttention]:
    return {
        i: layer.attention
        for i, layer in enumerate(model.model.layers)
        if isinstance(layer.attention, LightningAttention)
    }


def split_gqa(cfg, w):
    H, G, K = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    q, k, v = w.split([H * K, G * K, G * K])
    return q.view(H, K, -1), k.view(G, K, -1), v.view(G, K, -1)


def test_replicate_gives_every_head_the_kv_head_of_its_group(cfg, base):
    hybrid = gqa_to_hybrid(base, cfg, kv_init="replicate")
    H, G = cfg.num_attention_heads, cfg.num_key_value_heads
    layers = lightning_layers(hybrid)
    assert sorted(layers) == [0, 1, 2]
    for i, attention in layers.items():
        assert attention.query_key_value.weight.shape == (3 * H * cfg.head_dim, cfg.hidden_size)
        q, k, v = attention.query_key_value.weight.view(3, H, cfg.head_dim, -1)
        bq, bk, bv = split_gqa(cfg, base.model.layers[i].attention.query_key_value.weight)
        assert torch.equal(q, bq)
        for h in range(H):
            assert torch.equal(k[h], bk[h // (H // G)]) and torch.equal(v[h], bv[h // (H // G)])
        # The same, as projections: every query head meets the (pre-norm) key and value of its GQA group.
        x = torch.randn(5, cfg.hidden_size)
        pre_HNK = attention.query_key_value(x).view(5, 3, H, -1)
        base_pre = base.model.layers[i].attention.query_key_value(x).view(5, H + 2 * G, -1)
        group = torch.arange(H) // (H // G)
        torch.testing.assert_close(pre_HNK[:, 1], base_pre[:, H:][:, group], rtol=0, atol=0)


def test_first_of_group_copies_into_the_first_slot_and_draws_the_others(cfg, base):
    hybrid = gqa_to_hybrid(base, cfg, kv_init="first_of_group", seed=3)
    H, G, std = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.initializer_range
    group = H // G
    for i, attention in lightning_layers(hybrid).items():
        _, k, v = attention.query_key_value.weight.view(3, H, cfg.head_dim, -1)
        _, bk, bv = split_gqa(cfg, base.model.layers[i].attention.query_key_value.weight)
        for g in range(G):
            assert torch.equal(k[g * group], bk[g]) and torch.equal(v[g * group], bv[g])
        fresh = torch.stack([t[h] for t in (k, v) for h in range(H) if h % group])
        assert abs(fresh.std().item() / std - 1) < 0.05 and abs(fresh.mean().item()) < 0.05 * std
        assert not any(torch.equal(fresh[j], bk[0]) for j in range(len(fresh)))


@pytest.mark.parametrize("kv_init", ["replicate", "first_of_group"])
def test_new_parameters_follow_the_spec_and_qk_norm_is_kept(cfg, base, kv_init):
    hybrid = gqa_to_hybrid(base, cfg, kv_init=kv_init)
    gates = torch.stack([a.g_proj.weight for a in lightning_layers(hybrid).values()])
    assert abs(gates.std().item() / cfg.initializer_range - 1) < 0.05 and abs(gates.mean().item()) < 1e-3
    for i, attention in lightning_layers(hybrid).items():
        assert torch.equal(attention.g_norm.weight, torch.ones(cfg.num_attention_heads * cfg.head_dim))
        gqa = base.model.layers[i].attention
        assert torch.equal(attention.query_layernorm.weight, gqa.query_layernorm.weight)
        assert torch.equal(attention.key_layernorm.weight, gqa.key_layernorm.weight)
        assert torch.equal(attention.dense.weight, gqa.dense.weight)


def test_every_shared_weight_is_bit_identical(cfg, base):
    hybrid = gqa_to_hybrid(base, cfg)
    base_state, state = base.state_dict(), hybrid.state_dict()
    expanded = {f"model.layers.{i}.attention.query_key_value.weight" for i in lightning_layers(hybrid)}
    new = {k for k in state if k.endswith(("g_proj.weight", "g_norm.weight"))}
    assert set(state) - set(base_state) == new
    assert set(base_state) - set(state) == set()
    shared = set(state) - new - expanded
    assert all(torch.equal(state[k], base_state[k]) for k in shared)
    # The coverage that matters: MoE experts, the router's expert_bias buffer, MTP fusion, lm_head.
    for suffix in ("expert_bias", "experts.15.down_proj.weight", "eh_proj.weight", "lm_head.weight"):
        assert any(k.endswith(suffix) for k in shared), suffix
    assert hybrid.model.layers[4].mlp.gate.expert_bias.abs().sum() > 0


def test_softmax_layers_keep_the_base_attention(cfg, base):
    hybrid = gqa_to_hybrid(base, cfg)
    assert softmax_layer_indices(hybrid) == [3, 4]  # layer 3 and the MTP layer
    for i in (3, 4):
        attention = hybrid.model.layers[i].attention
        assert isinstance(attention, InterimGQAAttention) and attention.use_qk_norm
        assert all(
            torch.equal(p, base.model.layers[i].attention.get_parameter(n)) for n, p in attention.named_parameters()
        )


def test_all_softmax_hybrid_is_the_base_model(make_base, cfg, make_batches):
    """With layer_group_size 1 nothing becomes Lightning: the step-1 model must compute the base's function,
    MTP loss included, bit for bit."""
    config = dataclasses.replace(cfg, layer_group_size=1)
    base = make_base(layer_group_size=1)
    hybrid = gqa_to_hybrid(base, config)
    (ids,) = make_batches(1, seed=5)
    with torch.no_grad():
        want, got = base(ids, labels=ids), hybrid(ids, labels=ids)
    assert torch.equal(got.logits, want.logits)
    assert torch.equal(got.loss, want.loss) and torch.equal(got.mtp_loss, want.mtp_loss)


def test_intermediate_model_cached_decode_equals_full_forward(cfg, base, make_batches):
    hybrid = gqa_to_hybrid(base, cfg)
    (ids,) = make_batches(1, seed=6, shape=(2, 22))
    with torch.no_grad():
        full = hybrid(ids).logits
        out = hybrid(ids[:, :18], use_cache=True)
        steps = [out.logits]
        for t in range(18, 22):
            out = hybrid(ids[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits)
    assert isinstance(out.past_key_values, HybridCache)
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_conversion_is_seeded_and_leaves_the_global_rng_alone(cfg, base):
    state = torch.random.get_rng_state()
    a = gqa_to_hybrid(base, cfg, kv_init="first_of_group", seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = gqa_to_hybrid(base, cfg, kv_init="first_of_group", seed=1)
    c = gqa_to_hybrid(base, cfg, kv_init="first_of_group", seed=2)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["model.layers.0.attention.g_proj.weight"], sc["model.layers.0.attention.g_proj.weight"])


def test_mismatches_fail_loudly(cfg, base):
    with pytest.raises(ValueError, match="hidden_size"):
        gqa_to_hybrid(base, dataclasses.replace(cfg, hidden_size=64))
    with pytest.raises(ValueError, match="qk_rope_head_dim"):
        gqa_to_hybrid(base, dataclasses.replace(cfg, qk_rope_head_dim=8, qk_nope_head_dim=24))
    with pytest.raises(ValueError, match="kv_init"):
        gqa_to_hybrid(base, cfg, kv_init="zeros")
    with pytest.raises(ValueError, match="rows"):
        expand_qkv(torch.zeros(10, 4), 4, 2, 32, "replicate", 0.02, torch.Generator())
    with pytest.raises(ConfigError):
        dataclasses.replace(cfg, num_key_value_heads=3)
