"""The compiled one-token decode step equals each model's eager forward, step after step with a cache, and
the native engine generates the same tokens through it.

Tolerance: the compiled pieces sum the experts and fuse norms in other orders than the eager kernels; on
these tiny fp32 models the logits differ by ~1e-6 (measured), so the check is abs 2e-5 on logits of size ~0.3.
The greedy tokens then agree exactly. Each model compiles once per test module (~10-20 s on 2 cores).
"""

from dataclasses import replace

import pytest
import torch

from configs.model import RopeScalingConfig, tiny_model
from inference.compiled_decode import MIN_SPLIT_TOKENS, DecodeStep, latent_attention
from inference.native import NativeEngine
from inference.sampling import SamplingParams
from model import HybridForCausalLM, Ling2ForCausalLM

# Layer 0 dense, then MoE; the hybrid has MLA at layers 1 and 3 and Lightning at 0 and 2.
CFG = replace(tiny_model(), num_hidden_layers=4, layer_group_size=2, num_nextn_predict_layers=0)
# The hybrid as context extension leaves it: YaRN on the MLA rotary table and softmax scale (mscale 2 puts part of
# the temperature on cos/sin as well), which the compiled step must read from the same places the eager one does.
EXTENDED = replace(CFG, rope_scaling=RopeScalingConfig(factor=4.0, original_max_position_embeddings=16, mscale=2.0))
STEPS = 4
ATOL = 2e-5


@pytest.fixture(scope="module", params=[HybridForCausalLM, Ling2ForCausalLM], ids=["hybrid", "gqa_base"])
def model_and_step(request):
    torch.manual_seed(0)
    model = request.param(EXTENDED if request.param is HybridForCausalLM else CFG).eval()
    return model, DecodeStep(model)


def _left_padded_batch():
    gen = torch.Generator().manual_seed(1)
    ids_BT = torch.randint(1, CFG.vocab_size, (2, 9), generator=gen)
    mask_BT = torch.ones_like(ids_BT)
    mask_BT[1, :4] = 0  # the second row is a 5-token prompt, left-padded
    return ids_BT, mask_BT


@torch.no_grad()
def test_compiled_step_equals_eager_forward_with_a_cache(model_and_step):
    model, decode = model_and_step
    ids_BT, mask_BT = _left_padded_batch()
    eager_cache = model(ids_BT, attention_mask=mask_BT, use_cache=True).past_key_values
    out = model(ids_BT, attention_mask=mask_BT, use_cache=True)
    compiled_cache, next_B1 = out.past_key_values, out.logits[:, -1:].argmax(-1)
    for _ in range(STEPS):
        mask_BT = torch.cat((mask_BT, torch.ones(2, 1, dtype=mask_BT.dtype)), dim=1)
        expected = model(next_B1, attention_mask=mask_BT, past_key_values=eager_cache, use_cache=True).logits
        got = decode.step(next_B1, compiled_cache, mask_BT)
        assert got.shape == expected.shape and got.dtype == torch.float32
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
        next_B1 = expected[:, -1:].argmax(-1)
    assert compiled_cache.get_seq_length() == eager_cache.get_seq_length() == 9 + STEPS
    if isinstance(model, HybridForCausalLM):
        for layer, state in eager_cache.states.items():
            torch.testing.assert_close(compiled_cache.states[layer], state, atol=ATOL, rtol=0)
        for layer, latent in eager_cache.latents.items():
            torch.testing.assert_close(compiled_cache.latents[layer].tensor, latent.tensor, atol=ATOL, rtol=0)
    else:
        for ours, theirs in zip(
            compiled_cache.keys + compiled_cache.values, eager_cache.keys + eager_cache.values, strict=True
        ):
            torch.testing.assert_close(ours.tensor, theirs.tensor, atol=ATOL, rtol=0)


@torch.no_grad()
def test_refresh_picks_up_changed_expert_weights(model_and_step):
    model, decode = model_and_step
    ids_BT = torch.randint(1, CFG.vocab_size, (2, 6), generator=torch.Generator().manual_seed(2))  # batch 2 as above
    expert = model.model.layers[1].mlp.experts
    saved = [e.down_proj.weight.clone() for e in expert]
    try:
        for e in expert:
            e.down_proj.weight.mul_(3.0)
        decode.refresh()
        eager_cache = model(ids_BT, use_cache=True).past_key_values
        compiled_cache = model(ids_BT, use_cache=True).past_key_values
        next_B1 = ids_BT[:, -1:]
        expected = model(next_B1, past_key_values=eager_cache, use_cache=True).logits
        torch.testing.assert_close(decode.step(next_B1, compiled_cache), expected, atol=ATOL, rtol=0)
    finally:
        for e, w in zip(expert, saved, strict=True):
            e.down_proj.weight.copy_(w)
        decode.refresh()


class _IdTokenizer:
    def decode(self, token_ids, skip_special_tokens=True):
        return " ".join(map(str, token_ids))


def test_native_engine_generates_the_same_tokens_through_the_compiled_step(model_and_step):
    model, _ = model_and_step
    eager = NativeEngine(model, _IdTokenizer(), eos_id=-1, pad_id=0)
    compiled = NativeEngine(model, _IdTokenizer(), eos_id=-1, pad_id=0, compiled_decode=True)
    prompts = [[5, 9, 12, 40, 7], [3, 8, 100, 22, 17, 64, 9, 1, 30]]
    params = SamplingParams(temperature=0.0, max_new_tokens=6)
    for want, got in zip(eager.generate(prompts, params), compiled.generate(prompts, params), strict=True):
        assert got.token_ids == want.token_ids
        assert got.logprobs == pytest.approx(want.logprobs, abs=1e-4)


@pytest.mark.parametrize("num_tokens", [2 * MIN_SPLIT_TOKENS, 3 * MIN_SPLIT_TOKENS + 5])
def test_split_latent_attention_equals_one_sdpa_call(num_tokens):
    gen = torch.Generator().manual_seed(num_tokens)
    q_B1ML, latent_BSL = torch.randn(1, 1, 4, 160, generator=gen), torch.randn(1, num_tokens, 160, generator=gen)
    kv_B1SL = latent_BSL[:, None]
    expected = torch.nn.functional.scaled_dot_product_attention(q_B1ML, kv_B1SL, kv_B1SL, scale=0.1)
    for splits in (2, 3):  # with and without a remainder part
        torch.testing.assert_close(latent_attention(q_B1ML, latent_BSL, None, 0.1, splits), expected)
