"""Hybrid model: layer placement, cached decode == full forward (with left padding), decay rules, sizes, engine."""

import dataclasses

import pytest
import torch

from inference.native import NativeEngine
from inference.sampling import SamplingParams
from model.hybrid import HybridForCausalLM, HybridMTPLayer, model_log_decays, set_decay_rule, set_lightning_backend
from model.hybrid_cache import HybridCache, cache_bytes_per_token
from model.lightning_attention import LightningAttention
from model.ling2 import count_parameters
from model.mla import MultiLatentAttention
from model.moe import SparseMoeBlock


@pytest.fixture
def make_hybrid(cfg):
    def make(seed: int = 0, **overrides) -> HybridForCausalLM:
        torch.manual_seed(seed)
        return HybridForCausalLM(dataclasses.replace(cfg, initializer_range=0.08, **overrides)).eval()

    return make


@pytest.fixture
def hybrid(make_hybrid) -> HybridForCausalLM:
    return make_hybrid()


def ids(cfg, *shape, seed=1):
    return torch.randint(0, cfg.vocab_size, shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("layers", "group", "expected"),
    [(4, 4, "LLLF"), (8, 4, "LLLFLLLF"), (6, 4, "LLLFFF"), (3, 4, "FFF"), (5, 1, "FFFFF")],
)
def test_layer_types_are_data_and_follow_the_official_rule(make_hybrid, layers, group, expected):
    model = make_hybrid(num_hidden_layers=layers, layer_group_size=group, first_k_dense_replace=1)
    kinds = "".join("F" if t == "full_attention" else "L" for t in model.config.layer_types)
    assert kinds == expected
    for layer, kind in zip(model.model.layers, kinds, strict=False):
        assert isinstance(layer.attention, MultiLatentAttention if kind == "F" else LightningAttention)
    assert all(
        isinstance(m.attention, MultiLatentAttention) for m in model.model.layers if isinstance(m, HybridMTPLayer)
    )


def test_cached_decode_equals_full_forward(cfg, hybrid):
    tokens = ids(cfg, 2, 26)
    with torch.no_grad():
        full = hybrid(tokens).logits
        # A 20-token prefill crosses the 16-token Lightning chunk; then one token at a time.
        out = hybrid(tokens[:, :20], use_cache=True)
        steps = [out.logits]
        for t in range(20, 26):
            out = hybrid(tokens[:, t : t + 1], past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits)
    assert isinstance(out.past_key_values, HybridCache) and out.past_key_values.get_seq_length() == 26
    torch.testing.assert_close(torch.cat(steps, 1), full, rtol=1e-5, atol=1e-5)


def test_left_padded_batch_decodes_like_each_row_alone(cfg, hybrid):
    rows = [ids(cfg, 9, seed=2), ids(cfg, 14, seed=3)]
    new = ids(cfg, 2, 3, seed=4)
    T = max(len(r) for r in rows)
    batch = torch.zeros(2, T, dtype=torch.long)
    mask = torch.zeros(2, T, dtype=torch.long)
    for i, r in enumerate(rows):
        batch[i, T - len(r) :], mask[i, T - len(r) :] = r, 1
    with torch.no_grad():
        out = hybrid(batch, attention_mask=mask, use_cache=True)
        got = [out.logits[:, -1]]
        for t in range(3):
            mask = torch.cat((mask, torch.ones(2, 1, dtype=torch.long)), 1)
            out = hybrid(new[:, t : t + 1], attention_mask=mask, past_key_values=out.past_key_values, use_cache=True)
            got.append(out.logits[:, -1])
        for i, r in enumerate(rows):
            alone = hybrid(torch.cat((r, new[i]))[None]).logits[0, len(r) - 1 :]
            torch.testing.assert_close(torch.stack([g[i] for g in got]), alone, rtol=1e-4, atol=1e-4)

        # Dropping a finished row keeps the other one exact.
        cache = out.past_key_values.select_rows(torch.tensor([1]))
        nxt = ids(cfg, 1, 1, seed=5)
        mask = torch.cat((mask[1:], torch.ones(1, 1, dtype=torch.long)), 1)
        step = hybrid(nxt, attention_mask=mask, past_key_values=cache, use_cache=True).logits[0, -1]
        alone = hybrid(torch.cat((rows[1], new[1], nxt[0]))[None]).logits[0, -1]
    torch.testing.assert_close(step, alone, rtol=1e-4, atol=1e-4)


def test_decay_rules_differ_measurably_and_switch_back_exactly(cfg, hybrid):
    official, vllm = model_log_decays(cfg, "official"), model_log_decays(cfg, "vllm")
    assert sorted(official) == [i for i, t in enumerate(cfg.layer_types) if t == "linear_attention"]
    # vLLM's factor is smaller by 1/(L-1): every head decays more slowly there.
    for layer_idx in official:
        torch.testing.assert_close(
            official[layer_idx] - vllm[layer_idx], official[layer_idx] / (1 + 1e-5 - (layer_idx - 1) / 3) / 3
        )
    tokens = ids(cfg, 2, 24)
    with torch.no_grad():
        ref = hybrid(tokens).logits
        set_decay_rule(hybrid, "vllm")
        served = hybrid(tokens).logits
        set_decay_rule(hybrid, "official")
        back = hybrid(tokens).logits
    # The first position sees no history, so no decay: identical there. (With L = 4 layers the two factors differ
    # by 1/3 of the slope; at L = 80 by 1/79, which the mismatch report measures on real text.)
    logp, logq = ref.log_softmax(-1), served.log_softmax(-1)
    kl_per_token = (logp.exp() * (logp - logq)).sum(-1)  # [B, T]
    torch.testing.assert_close(kl_per_token[:, 0], torch.zeros(2), atol=1e-6, rtol=0)
    assert (kl_per_token[:, 1:] > 0).all() and (served - ref).abs().max() > 1e-3
    assert torch.equal(back, ref)


def test_torch_and_kernels_paths_give_the_same_model(cfg, hybrid):
    tokens = ids(cfg, 2, 20)
    with torch.no_grad():
        set_lightning_backend(hybrid, "kernels")
        ref = hybrid(tokens).logits
        set_lightning_backend(hybrid, "torch")
        out = hybrid(tokens).logits
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_training_forward_has_mtp_loss_and_finite_gradients(cfg, hybrid):
    tokens = ids(cfg, 2, 18)
    hybrid.train()
    out = hybrid(tokens, labels=tokens)
    assert out.mtp_loss is not None and torch.isfinite(out.loss)
    out.loss.backward()
    missing = [n for n, p in hybrid.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    # Experts no token was routed to get no gradient; every other parameter does.
    assert all(".experts." in n for n in missing), missing
    with pytest.raises(ValueError, match="without a cache"):
        hybrid(tokens, labels=tokens, use_cache=True)


def test_count_parameters_counts_mtp_and_unused_experts_as_inactive(cfg, hybrid):
    total, active = count_parameters(hybrid)
    assert total == sum(p.numel() for p in hybrid.parameters())
    L = cfg.num_hidden_layers
    mtp = sum(p.numel() for layer in hybrid.model.layers[L:] for p in layer.parameters())
    expert = sum(p.numel() for p in hybrid.model.layers[1].mlp.experts[0].parameters())
    moe_layers = sum(isinstance(layer.mlp, SparseMoeBlock) for layer in hybrid.model.layers[:L])
    assert active == total - mtp - moe_layers * (cfg.num_experts - cfg.num_experts_per_tok) * expert


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cache_bytes_per_token_analytic_equals_measured(cfg, hybrid, dtype):
    model = hybrid.to(dtype)
    B, S = 2, 24
    with torch.no_grad():
        cache = model(ids(cfg, B, S), use_cache=True).past_key_values
    live = cache.live_bytes()
    analytic = cache_bytes_per_token(model, context_len=S)
    assert live["latent"] / (B * S) == analytic["latent"]
    assert live["state"] / (B * S) == pytest.approx(analytic["state"])
    assert live["total"] / (B * S) == pytest.approx(analytic["total"])
    assert all(s.dtype == torch.float32 for s in cache.states.values())
    # A bare config is costed at the bf16 serving dtype; the state term shrinks with the context.
    long = cache_bytes_per_token(cfg, context_len=4096)
    assert long["latent"] == (cfg.kv_lora_rank + cfg.qk_rope_head_dim) * 2 and long["state"] < analytic["state"]


class IdTokenizer:
    def decode(self, token_ids, skip_special_tokens=True):
        return " ".join(map(str, token_ids))


def test_native_engine_generates_with_the_hybrid(cfg, hybrid):
    engine = NativeEngine(hybrid, IdTokenizer(), eos_id=-1, pad_id=0)
    prompts = [ids(cfg, 5, seed=6).tolist(), ids(cfg, 11, seed=7).tolist()]
    params = SamplingParams(temperature=0.0, max_new_tokens=5)
    batched = engine.generate(prompts, params)
    for prompt, gen in zip(prompts, batched, strict=True):
        alone = engine.generate([prompt], params)[0]
        assert gen.token_ids == alone.token_ids
        assert gen.logprobs == pytest.approx(alone.logprobs, abs=1e-4)
