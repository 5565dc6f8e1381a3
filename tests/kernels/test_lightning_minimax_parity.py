"""Parity with an implementation written elsewhere: the lightning attention inside transformers'
MiniMax model (``MiniMaxLightningAttention``).

Its core computation is inline in ``forward`` (not callable on its own), so we build one tiny layer from
a ``MiniMaxConfig`` and align with it as follows:
  * q, k, v: the same tensors the layer computes, ``act_fn(qkv_proj(x))`` reshaped to [B, T, H, 3·D]
    and split into thirds, exactly as its forward does; our layout [B, T, H, D] is theirs transposed.
  * decay: MiniMax multiplies the state by exp(-slope_rate) per step, so g = -slope_rate.
  * scale: MiniMax applies no 1/√D, so scale = 1.
  * output: the tensor entering ``layer.norm`` (a forward pre-hook captures it) is the linear-attention
    output, [B, T, H·D]; the layer also returns its final state (K·V accumulator) [B, H, D, D].
  * decode: with a ``MiniMaxCache`` holding that state, the layer runs its token-by-token branch.
"""

import pytest
import torch
from transformers import MiniMaxConfig
from transformers.models.minimax.modeling_minimax import MiniMaxCache, MiniMaxLightningAttention

from kernels.lightning import (
    chunk_lightning_attn,
    fused_recurrent_lightning_attn,
    lightning_log_decay,
    naive_chunk_lightning,
    naive_recurrent_lightning,
)
from kernels.testing import assert_close

B, H, D, NUM_LAYERS, LAYER_IDX, BLOCK = 2, 4, 16, 4, 1, 16


@pytest.fixture(scope="module")
def layer():
    torch.manual_seed(0)
    config = MiniMaxConfig(
        hidden_size=32,
        num_attention_heads=H,
        num_key_value_heads=H,
        head_dim=D,
        num_hidden_layers=NUM_LAYERS,
        layer_types=["linear_attention"] * NUM_LAYERS,
        block_size=BLOCK,
    )
    return MiniMaxLightningAttention(config, layer_idx=LAYER_IDX).eval()


def _qkv(layer, x):
    qkv = layer.act_fn(layer.qkv_proj(x)).reshape(*x.shape[:2], H, 3 * D)
    return torch.split(qkv, D, dim=3)  # 3 x [B, T, H, D]


def _run_layer(layer, x, cache=None):
    """Returns (the layer's linear-attention output [B, T, H, D], its state [B, H, D, D])."""
    captured = []
    handle = layer.norm.register_forward_pre_hook(lambda _, args: captured.append(args[0]))
    try:
        with torch.no_grad():
            _, state = layer(x, position_embeddings=None, attention_mask=None, past_key_values=cache)
    finally:
        handle.remove()
    return captured[0].reshape(*x.shape[:2], H, D), state


def _g(layer):
    return -layer.slope_rate.flatten()  # [H]


def test_minimax_decay_is_the_vllm_rule(layer):
    # MiniMax's factor 1 - ℓ/(L-1+1e-5) + 1e-5 is vLLM's rule, not the official Bailing one.
    vllm = lightning_log_decay(H, LAYER_IDX, NUM_LAYERS, rule="vllm")
    official = lightning_log_decay(H, LAYER_IDX, NUM_LAYERS, rule="official")
    torch.testing.assert_close(_g(layer), vllm, rtol=1e-4, atol=0)
    assert not torch.allclose(_g(layer), official, rtol=1e-2, atol=0)


@pytest.mark.parametrize("T", [7, 40])
def test_prefill_matches_minimax(layer, T):
    x = torch.randn(B, T, 32)
    o_ref, state_ref = _run_layer(layer, x)
    q, k, v = _qkv(layer, x)
    with torch.no_grad():
        o, state = naive_chunk_lightning(q, k, v, _g(layer), scale=1.0, output_final_state=True)
    assert_close("o", o_ref, o, 1e-5)
    assert_close("final state", state_ref, state, 1e-5)


def test_triton_prefill_and_decode_match_minimax(layer, triton_cpu):
    x = torch.randn(B, 21, 32)
    prompt, new_tokens = x[:, :17], x[:, 17:]
    cache = MiniMaxCache()
    o_ref, state_ref = _run_layer(layer, prompt, cache)
    q, k, v = _qkv(layer, prompt)
    with torch.no_grad():
        o, state = chunk_lightning_attn(q, k, v, _g(layer), scale=1.0, output_final_state=True, chunk_size=16)
    assert_close("prefill o", o_ref, o, 5e-3)
    assert_close("prefill state", state_ref, state, 5e-3)

    for t in range(new_tokens.shape[1]):
        x_t = new_tokens[:, t : t + 1]
        o_ref, state_ref = _run_layer(layer, x_t, cache)
        q, k, v = _qkv(layer, x_t)
        with torch.no_grad():
            o, state = fused_recurrent_lightning_attn(
                q, k, v, _g(layer), scale=1.0, initial_state=state, output_final_state=True
            )
        assert_close(f"decode o, token {t}", o_ref, o, 5e-3)
        assert_close(f"decode state, token {t}", state_ref, state, 5e-3)


def test_decode_matches_minimax_recurrent_branch(layer):
    x = torch.randn(B, 6, 32)
    cache = MiniMaxCache()
    _, state0 = _run_layer(layer, x[:, :1], cache)
    o_ref, state_ref = _run_layer(layer, x[:, 1:], cache)
    q, k, v = _qkv(layer, x[:, 1:])
    with torch.no_grad():
        o, state = naive_recurrent_lightning(
            q, k, v, _g(layer), scale=1.0, initial_state=state0, output_final_state=True
        )
    assert_close("o", o_ref, o, 1e-5)
    assert_close("state", state_ref, state, 1e-5)
