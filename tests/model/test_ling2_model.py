"""The Ling-2.0 causal LM: losses (main + MTP + z-loss), router statistics, KV-cache decode, left padding."""

import pytest
import torch
import torch.nn.functional as F

from model.attention import KVCache
from model.ling2 import IGNORE_INDEX, count_parameters
from model.moe import Router


def test_forward_shapes_and_router_stats(cfg, model, tokens):
    out = model(tokens, labels=tokens)
    B, T = tokens.shape
    num_moe = cfg.num_hidden_layers - cfg.first_k_dense_replace + cfg.num_nextn_predict_layers
    assert out.logits.shape == (B, T, cfg.vocab_size) and out.logits.dtype == torch.float32
    stats = out.router_stats
    assert stats.tokens_per_expert.shape == (num_moe, cfg.num_experts)
    assert torch.equal(stats.tokens_per_expert.sum(-1), torch.full((num_moe,), float(B * T * cfg.num_experts_per_tok)))
    assert len(stats.router_logits) == num_moe and stats.router_logits[0].shape == (B * T, cfg.num_experts)
    z_loss = sum(torch.logsumexp(logits, -1).square().mean() for logits in stats.router_logits)
    torch.testing.assert_close(stats.z_loss, z_loss)
    assert out.past_key_values is None


def test_losses_follow_the_shifted_labels(cfg, model, tokens):
    labels = tokens.clone()
    labels[0, 4] = IGNORE_INDEX
    out = model(tokens, labels=labels)
    V = cfg.vocab_size

    lm_loss = F.cross_entropy(out.logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1))
    backbone = model.model(tokens, with_mtp=True)
    mtp_logits = model.lm_head(backbone.mtp_hidden[0]).float()
    # Depth 1 predicts x_{t+2}: the last two positions have no target.
    mtp_loss = F.cross_entropy(mtp_logits[:, :-2].reshape(-1, V), labels[:, 2:].reshape(-1))
    torch.testing.assert_close(out.lm_loss, lm_loss)
    torch.testing.assert_close(out.mtp_loss, mtp_loss)
    expected = lm_loss + cfg.mtp_loss_scaling_factor * mtp_loss + cfg.router_z_loss_coeff * out.router_stats.z_loss
    torch.testing.assert_close(out.loss, expected)
    torch.testing.assert_close(model(tokens).logits, out.logits)  # MTP never changes the main logits


def test_first_label_is_never_a_target_and_the_last_two_only_feed_the_main_loss(model, tokens):
    base = model(tokens, labels=tokens)
    changed_first = tokens.clone()
    changed_first[:, 0] = (tokens[:, 0] + 1) % 100
    out = model(tokens, labels=changed_first)
    assert torch.equal(out.lm_loss, base.lm_loss) and torch.equal(out.mtp_loss, base.mtp_loss)

    changed_last = tokens.clone()
    changed_last[:, -1] = (tokens[:, -1] + 1) % 100
    out = model(tokens, labels=changed_last)
    assert not torch.equal(out.lm_loss, base.lm_loss)
    assert not torch.equal(out.mtp_loss, base.mtp_loss)  # x_T is the MTP target of position T-2


def test_gradients_reach_router_and_experts_not_the_bias(model, tokens):
    model.train()
    model(tokens, labels=tokens).loss.backward()
    router = next(m for m in model.modules() if isinstance(m, Router))
    assert router.weight.grad is not None and router.weight.grad.abs().sum() > 0
    assert model.model.layers[1].mlp.experts[0].down_proj.weight.grad is not None
    assert model.model.layers[-1].eh_proj.weight.grad.abs().sum() > 0  # the MTP layer trains
    assert not router.expert_bias.requires_grad


@torch.no_grad()
def test_cached_decode_matches_full_forward(model, tokens):
    full = model(tokens).logits
    prompt = 5
    out = model(tokens[:, :prompt], use_cache=True)
    cache = out.past_key_values
    torch.testing.assert_close(out.logits, full[:, :prompt], rtol=0, atol=1e-5)
    for t in range(prompt, tokens.shape[1]):
        step = model(tokens[:, t : t + 1], past_key_values=cache, use_cache=True)
        torch.testing.assert_close(step.logits[:, 0], full[:, t], rtol=0, atol=1e-5)
    assert cache.get_seq_length() == tokens.shape[1]


@torch.no_grad()
def test_chunked_prefill_matches_full_forward(model, tokens):
    full = model(tokens).logits
    cache = KVCache()
    first = model(tokens[:, :6], past_key_values=cache).logits
    second = model(tokens[:, 6:], past_key_values=cache).logits
    torch.testing.assert_close(torch.cat((first, second), 1), full, rtol=0, atol=1e-5)


@torch.no_grad()
def test_left_padding_matches_unpadded_sequences_and_cached_decode(cfg, model):
    gen = torch.Generator().manual_seed(2)
    short, long = (
        torch.randint(0, cfg.vocab_size, (1, 6), generator=gen),
        torch.randint(0, cfg.vocab_size, (1, 9), generator=gen),
    )
    pad = long.shape[1] - short.shape[1]
    batch = torch.cat((torch.cat((torch.zeros(1, pad, dtype=torch.long), short), 1), long))
    mask = torch.ones_like(batch)
    mask[0, :pad] = 0

    padded = model(batch, attention_mask=mask).logits
    torch.testing.assert_close(padded[0, pad:], model(short).logits[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(padded[1], model(long).logits[0], rtol=0, atol=1e-5)

    prompt = 7
    out = model(batch[:, :prompt], attention_mask=mask[:, :prompt], use_cache=True)
    for t in range(prompt, batch.shape[1]):
        out = model(batch[:, t : t + 1], attention_mask=mask[:, : t + 1], past_key_values=out.past_key_values)
        torch.testing.assert_close(out.logits[:, 0], padded[:, t], rtol=0, atol=1e-5)


def test_padding_is_left_out_of_router_counts_and_z_loss(cfg, model, tokens):
    mask = torch.ones_like(tokens)
    mask[0, :4] = 0
    stats = model(tokens, attention_mask=mask).router_stats
    valid = int(mask.sum())
    assert torch.equal(stats.tokens_per_expert.sum(-1), torch.full_like(stats.tokens_per_expert[:, 0], valid * 2.0))
    keep = mask.flatten().bool()
    z_loss = sum(torch.logsumexp(logits[keep], -1).square().mean() for logits in stats.router_logits)
    torch.testing.assert_close(stats.z_loss, z_loss)


def test_mtp_needs_whole_sequences(model, tokens):
    with pytest.raises(ValueError, match="MTP"):
        model(tokens, labels=tokens, use_cache=True)


def test_init_and_parameter_count(cfg, model):
    D, V, K = cfg.hidden_size, cfg.vocab_size, cfg.head_dim
    attention = (
        D * (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * K + cfg.num_attention_heads * K * D + 2 * K
    )
    expert = 3 * D * cfg.moe_intermediate_size
    moe_layer = attention + 2 * D + cfg.num_experts * D + (cfg.num_experts + cfg.num_shared_experts) * expert
    dense_layer = attention + 2 * D + 3 * D * cfg.intermediate_size
    dense, moe = cfg.first_k_dense_replace, cfg.num_hidden_layers - cfg.first_k_dense_replace
    mtp_layer = moe_layer + 3 * D + 2 * D * D
    main = 2 * V * D + D + dense * dense_layer + moe * moe_layer
    total, active = count_parameters(model)
    assert total == main + cfg.num_nextn_predict_layers * mtp_layer
    assert active == main - moe * (cfg.num_experts - cfg.num_experts_per_tok) * expert

    std = model.model.layers[1].mlp.experts[3].up_proj.weight.std().item()
    assert abs(std - cfg.initializer_range) < 0.1 * cfg.initializer_range
    assert torch.equal(model.model.norm.weight, torch.ones(D))
    assert torch.equal(model.model.layers[1].mlp.gate.expert_bias, torch.zeros(cfg.num_experts))
