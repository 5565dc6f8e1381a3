"""Sizing formulas of a ``ModelConfig`` in both layouts the pipeline trains, the Ling-2.0 base (GQA,
``model.ling2``) and the Ling-2.5/2.6 hybrid (Lightning + MLA, ``model.hybrid``): parameters, ZeRO-3 bytes per
GPU, decode cache bytes, FLOPs per token, tokens per day, serving layout. Pure Python (no model is built, no torch
imported); ``configs.plan`` turns them into a profile's table.

Conventions (each formula sits in the function that computes it; tests/configs/test_plan.py checks them against
the model code: ``sum(p.numel())``, ``count_parameters``, live decode caches, and torch's FLOP counter):

* Parameters: what our model code builds. ``main`` excludes the MTP layers, as the released models' cards count
  (Ling-mini-2.0's 16.26 B / 1.43 B / 789 M are reproduced exactly that way); ``stored`` includes them (what
  training holds). ``active`` is one token's inference path: embeddings, lm_head, every main layer with A of its
  E routed experts. ``non-embedding`` removes the input embedding and the lm_head.
* Memory, DeepSpeed ZeRO-3 in bf16: 16 bytes per stored parameter (bf16 weight 2 + bf16 gradient 2 + fp32 master
  weight 4 + fp32 Adam m 4 + fp32 Adam v 4; the ZeRO paper's 2 + 2 + K=12), sharded over the data-parallel
  ranks; plus the working set ZeRO-3 gathers: the largest layer's bf16 weights twice (the layer computing and the
  one prefetched; a MoE block is one ZeRO-3 leaf, gathered whole, as our DeepSpeed training has no expert or
  tensor parallelism) and the stacked copy of one block's experts that our batched expert path builds; plus
  activations under layer-boundary checkpointing (each layer's bf16 input) and the fp32 logits of one
  micro-batch, which ``causal_lm_forward`` materialises. One layer's recomputed activations are not counted.
* Cache: Ling-2.0 keeps bf16 K and V, 2·G·K per layer per token. The hybrid keeps per MLA layer the latent
  [c ; k_r], kv_lora_rank + qk_rope_head_dim values per token, and per Lightning layer one fp32 state H·K·K per
  sequence whatever its length; "per token" amortises that state over the context. MTP layers are never cached.
* FLOPs per token: forward = 2·(active non-embedding parameters) + 2·V·D (lm_head) + attention, a multiply-add
  counted as 2 FLOPs (Kaplan et al. 2020, Tab. 1, C_forward ≈ 2N + 2·n_layer·n_ctx·d_attn); attention is
  counted exactly for our kernels at the mean causal context (T + 1)/2; training = 3 × forward (backward 2×),
  the MTP layers' forward included: Kaplan's C ≈ 6N per token, Chinchilla's 6ND (Hoffmann et al. 2022).
  Activation recomputation is not counted (model FLOPs utilisation, as PaLM defines MFU).
* Tokens per day = MFU × peak × GPUs × 86,400 s / training FLOPs per token. Peak defaults to the H100/H200 SXM
  dense bf16 tensor-core figure, 989 TFLOPS (NVIDIA datasheets; 1,979 is with 2:4 sparsity).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from configs.model import ModelConfig

Layout = Literal["base", "hybrid"]
LAYOUTS: tuple[Layout, ...] = ("base", "hybrid")

# bf16 weight + bf16 gradient + fp32 master weight + fp32 Adam m + fp32 Adam v.
ZERO3_BYTES_PER_PARAM = 2 + 2 + 4 + 4 + 4
BF16 = 2
FP32 = 4
# NVIDIA H100 / H200 SXM: 989.4 dense bf16 TFLOPS (both chips share the compute; H200 has more, faster memory).
H100_BF16_DENSE_TFLOPS = 989.0
SECONDS_PER_DAY = 86400
# vLLM's default --gpu-memory-utilization: the share of a GPU the engine takes for weights and cache.
SERVING_MEMORY_UTILIZATION = 0.9
GIB = 2**30


def _linear(n_in: int, n_out: int, bias: bool) -> int:
    return n_in * n_out + (n_out if bias else 0)


def _swiglu(m: ModelConfig, width: int) -> int:
    return 3 * m.hidden_size * width


def _expert(m: ModelConfig) -> int:
    return _swiglu(m, m.moe_intermediate_size)


def _moe_block(m: ModelConfig) -> int:
    """Router weight [E, D] (the expert bias is a buffer), E routed experts, the shared expert(s) as one MLP."""
    shared = _swiglu(m, m.moe_intermediate_size * m.num_shared_experts) if m.num_shared_experts else 0
    return m.num_experts * m.hidden_size + m.num_experts * _expert(m) + shared


def _qk_norms(m: ModelConfig) -> int:
    return 2 * m.head_dim if m.use_qk_norm else 0


def _gqa(m: ModelConfig) -> int:
    D, H, G, K = m.hidden_size, m.num_attention_heads, m.num_key_value_heads, m.head_dim
    return _linear(D, (H + 2 * G) * K, m.use_qkv_bias) + _qk_norms(m) + _linear(H * K, D, m.use_bias)


def _lightning(m: ModelConfig) -> int:
    """MHA qkv, QK norms, output gate g_proj, group norm g_norm over H·K, dense."""
    D, W = m.hidden_size, m.num_attention_heads * m.head_dim
    return _linear(D, 3 * W, m.use_qkv_bias) + _qk_norms(m) + D * W + W + _linear(W, D, m.use_bias)


def _mla(m: ModelConfig) -> int:
    """q (low-rank with its norm, or plain), kv_a (latent + shared rope key) with its norm, kv_b, dense.

    The MLA output projection takes ``use_qkv_bias`` (as ``model.mla``, the official module), not ``use_bias``."""
    D, H, bias = m.hidden_size, m.num_attention_heads, m.use_qkv_bias
    qk = m.qk_nope_head_dim + m.qk_rope_head_dim
    if m.q_lora_rank is None:
        q = D * H * qk
    else:
        q = _linear(D, m.q_lora_rank, bias) + m.q_lora_rank + m.q_lora_rank * H * qk
    kv = _linear(D, m.kv_lora_rank + m.qk_rope_head_dim, bias) + m.kv_lora_rank
    kv += m.kv_lora_rank * H * (m.qk_nope_head_dim + m.v_head_dim)
    return q + kv + _linear(H * m.v_head_dim, D, bias)


def attention_kinds(m: ModelConfig, layout: Layout) -> list[str]:
    """Per main layer: "gqa" (base), or "lightning" / "mla" by the official layer_types rule (hybrid)."""
    if layout == "base":
        return ["gqa"] * m.num_hidden_layers
    return ["mla" if kind == "full_attention" else "lightning" for kind in m.layer_types]


def _attention(m: ModelConfig, kind: str) -> int:
    return {"gqa": _gqa, "lightning": _lightning, "mla": _mla}[kind](m)


def _layer(m: ModelConfig, kind: str, moe: bool) -> int:
    """Two RMSNorms, the attention, the FFN (dense SwiGLU or MoE block)."""
    return 2 * m.hidden_size + _attention(m, kind) + (_moe_block(m) if moe else _swiglu(m, m.intermediate_size))


def _mtp_layer(m: ModelConfig, layout: Layout) -> int:
    """A MoE layer (GQA in the base, MLA in the hybrid) + enorm, hnorm, final_layernorm and eh_proj 2D -> D."""
    kind = "gqa" if layout == "base" else "mla"
    return _layer(m, kind, moe=True) + 3 * m.hidden_size + 2 * m.hidden_size**2


@dataclass(frozen=True)
class ParamCount:
    main: int  # every parameter outside the MTP layers (the released cards' "total")
    mtp: int
    embedding: int  # input embedding + lm_head (counted once when tied)
    routed_experts: int  # routed expert weights of the main layers
    active: int  # one token's inference path (embeddings included)

    @property
    def stored(self) -> int:
        return self.main + self.mtp

    @property
    def active_non_embedding(self) -> int:
        return self.active - self.embedding


def param_count(m: ModelConfig, layout: Layout) -> ParamCount:
    """Exact parameter counts of ``model.ling2.Ling2ForCausalLM`` (base) or ``model.hybrid.HybridForCausalLM``."""
    D = m.hidden_size
    embedding = m.vocab_size * D * (1 if m.tie_word_embeddings else 2)
    layers = 0
    num_moe = 0
    for i, kind in enumerate(attention_kinds(m, layout)):
        moe = i >= m.first_k_dense_replace
        num_moe += moe
        layers += _layer(m, kind, moe)
    main = embedding + layers + D  # + the final norm
    routed = num_moe * m.num_experts * _expert(m)
    inactive = num_moe * (m.num_experts - m.num_experts_per_tok) * _expert(m)
    return ParamCount(
        main=main,
        mtp=m.num_nextn_predict_layers * _mtp_layer(m, layout),
        embedding=embedding,
        routed_experts=routed,
        active=main - inactive,
    )


def cache_bytes(m: ModelConfig, layout: Layout, context_len: int, latent_bytes: int = BF16) -> dict[str, float]:
    """Decode cache of one sequence of ``context_len`` tokens: ``per_token`` bytes growing with the context
    (GQA keys + values, or MLA latents, in the serving dtype ``latent_bytes``), ``per_sequence_fixed`` bytes
    that do not (Lightning fp32 states), ``per_sequence`` their total and ``per_token_amortised`` = total / T."""
    if context_len < 1:
        raise ValueError(f"context_len must be >= 1, got {context_len}")
    kinds = attention_kinds(m, layout)
    per_token = 0
    fixed = 0
    for kind in kinds:
        if kind == "gqa":
            per_token += 2 * m.num_key_value_heads * m.head_dim * latent_bytes
        elif kind == "mla":
            per_token += (m.kv_lora_rank + m.qk_rope_head_dim) * latent_bytes
        else:
            fixed += m.num_attention_heads * m.head_dim**2 * FP32
    total = per_token * context_len + fixed
    return {
        "per_token": float(per_token),
        "per_sequence_fixed": float(fixed),
        "per_sequence": float(total),
        "per_token_amortised": total / context_len,
    }


# ---- FLOPs ----


def attention_flops_per_token(m: ModelConfig, layout: Layout, keys: float) -> float:
    """Forward FLOPs per query token of the attention mixing (scores and weighted sums; projections are counted
    with the parameters), each query attending ``keys`` keys:

        GQA                  2·H·K·keys (Q·Kᵀ) + 2·H·K·keys (P·V)
        MLA (training path)  2·H·(Kn + Kr)·keys + 2·H·Kv·keys
        Lightning (chunked)  4·H·K·C (Q·Kᵀ and ·V inside the C-token chunk, whole squares) + 4·H·K² (Q·S, Kᵀ·V)

    Lightning's cost does not depend on ``keys``: that is the point of the hybrid."""
    H = m.num_attention_heads
    total = 0.0
    for kind in attention_kinds(m, layout):
        if kind == "gqa":
            total += 4 * H * m.head_dim * keys
        elif kind == "mla":
            total += 2 * H * (m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim) * keys
        else:
            total += 4 * H * m.head_dim * m.lightning_chunk_size + 4 * H * m.head_dim**2
    return total


def _mtp_active(m: ModelConfig, layout: Layout) -> int:
    """One MTP layer's parameters on one token's path: all but its E - A idle routed experts."""
    return _mtp_layer(m, layout) - (m.num_experts - m.num_experts_per_tok) * _expert(m)


def forward_flops_per_token(m: ModelConfig, layout: Layout, keys: float) -> dict[str, float]:
    """Forward FLOPs per token with each query attending ``keys`` keys: ``main`` (the inference path:
    2·active non-embedding parameters + the lm_head 2·V·D + the attention mixing) and ``mtp`` (training only: each
    MTP depth runs one more layer, GQA in the base and MLA in the hybrid, and the shared lm_head)."""
    lm_head = 2 * m.vocab_size * m.hidden_size
    attention = attention_flops_per_token(m, layout, keys)
    main = 2 * param_count(m, layout).active_non_embedding + lm_head + attention
    H = m.num_attention_heads
    if layout == "base":
        mtp_attention = 4 * H * m.head_dim * keys
    else:
        mtp_attention = 2 * H * (m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim) * keys
    mtp = m.num_nextn_predict_layers * (2 * _mtp_active(m, layout) + lm_head + mtp_attention)
    return {"main": main, "attention": attention, "mtp": mtp}


def flops_per_token(m: ModelConfig, layout: Layout, seq_len: int) -> dict[str, float]:
    """Forward and training FLOPs per token of a causal sequence of ``seq_len`` tokens: the mean query attends
    (seq_len + 1) / 2 keys; training = 3 × (forward + MTP forward) (module docstring)."""
    flops = forward_flops_per_token(m, layout, keys=(seq_len + 1) / 2)
    return {
        "forward": flops["main"],
        "forward_attention": flops["attention"],
        "training": 3 * (flops["main"] + flops["mtp"]),
    }


def tokens_per_day(training_flops_per_token: float, *, gpus: int, mfu: float, peak_tflops: float) -> float:
    return mfu * peak_tflops * 1e12 * gpus * SECONDS_PER_DAY / training_flops_per_token


def _largest_gathered_layer(m: ModelConfig, layout: Layout, expert_parallel: int) -> int:
    """Parameters of the largest layer a rank gathers: with experts split over ``expert_parallel`` ranks, a MoE
    layer holds E / EP of its routed experts there."""
    idle_experts = (m.num_experts - m.num_experts // expert_parallel) * _expert(m)
    sizes = [
        _layer(m, kind, moe) - (idle_experts if moe else 0)
        for kind, moe in zip(
            attention_kinds(m, layout), (i >= m.first_k_dense_replace for i in range(m.num_hidden_layers)), strict=True
        )
    ]
    if m.num_nextn_predict_layers:
        sizes.append(_mtp_layer(m, layout) - idle_experts)
    return max(sizes)


def zero3_memory(
    m: ModelConfig, layout: Layout, *, data_parallel: int, micro_batch_size: int, seq_len: int, expert_parallel: int = 1
) -> dict[str, float]:
    """Bytes per GPU of DeepSpeed ZeRO-3 bf16 training over ``data_parallel`` ranks (module docstring).

    ``expert_parallel`` > 1 is DeepSpeed-MoE's layout, which our engine does not set up: each rank holds E / EP
    experts of every MoE block, ZeRO-3 shards them over the DP / EP ranks holding the same experts. The 16 bytes
    per parameter still spread over all DP ranks; what shrinks is the gathered working set."""
    if m.num_experts % expert_parallel or data_parallel % expert_parallel:
        raise ValueError(f"expert_parallel {expert_parallel} must divide num_experts and data_parallel")
    count = param_count(m, layout)
    states = ZERO3_BYTES_PER_PARAM * count.stored / data_parallel
    # SparseMoeBlock is a ZeRO-3 leaf module (training/deepspeed_engine.py): its experts are gathered at once, and
    # the batched expert path (model/moe.py) stacks their weights into one more copy that autograd keeps.
    has_moe = m.first_k_dense_replace < m.num_hidden_layers or m.num_nextn_predict_layers > 0
    stacked_experts = BF16 * (m.num_experts // expert_parallel) * _expert(m) if has_moe else 0
    gathered = 2 * BF16 * _largest_gathered_layer(m, layout, expert_parallel) + stacked_experts
    layers = m.num_hidden_layers + m.num_nextn_predict_layers
    activations = layers * micro_batch_size * seq_len * m.hidden_size * BF16
    logits = (1 + m.num_nextn_predict_layers) * micro_batch_size * seq_len * m.vocab_size * FP32
    return {
        "model_states": states,
        "gathered_layers": float(gathered),
        "activations": float(activations + logits),
        "total": states + gathered + activations + logits,
    }


@dataclass(frozen=True)
class ServingLayout:
    tensor_parallel: int
    pipeline_parallel: int
    expert_parallel: int
    weights_per_gpu: float
    cache_per_gpu: float

    @property
    def gpus(self) -> int:
        return self.tensor_parallel * self.pipeline_parallel


def serving_memory(
    m: ModelConfig, layout: Layout, *, tensor_parallel: int, pipeline_parallel: int, context_len: int, batch: int
) -> tuple[float, float]:
    """(bf16 weights, cache) bytes per GPU when vLLM / SGLang serve the main layers (MTP excluded) with attention
    and dense weights split over ``tensor_parallel``, routed experts over the same group (expert parallel =
    tensor parallel, the ``--enable-expert-parallel`` layout) and layers over ``pipeline_parallel`` stages.
    The cache of ``batch`` sequences: GQA key/value heads split over TP up to G (replicated beyond), MLA's single
    latent head replicated on every TP rank, Lightning states split by heads."""
    count = param_count(m, layout)
    gpus = tensor_parallel * pipeline_parallel
    weights = BF16 * count.main / gpus
    kinds = attention_kinds(m, layout)
    per_token = 0.0
    fixed = 0.0
    for kind in kinds:
        if kind == "gqa":
            per_token += 2 * m.num_key_value_heads * m.head_dim * BF16 / min(tensor_parallel, m.num_key_value_heads)
        elif kind == "mla":
            per_token += (m.kv_lora_rank + m.qk_rope_head_dim) * BF16
        else:
            fixed += m.num_attention_heads * m.head_dim**2 * FP32 / tensor_parallel
    cache = batch * (per_token * context_len + fixed) / pipeline_parallel
    return weights, cache


def suggest_serving(
    m: ModelConfig, layout: Layout, *, gpu_memory_gib: float, gpus_per_node: int, context_len: int, batch: int
) -> ServingLayout:
    """The smallest power-of-two GPU count whose per-GPU weights + cache fit ``SERVING_MEMORY_UTILIZATION`` of a
    GPU: tensor (= expert) parallel inside a node, pipeline stages across nodes (vLLM's multi-node advice)."""
    budget = SERVING_MEMORY_UTILIZATION * gpu_memory_gib * GIB
    for exponent in range(0, 13):
        gpus = 2**exponent
        tp = min(gpus, gpus_per_node)
        pp = gpus // tp
        weights, cache = serving_memory(
            m, layout, tensor_parallel=tp, pipeline_parallel=pp, context_len=context_len, batch=batch
        )
        if weights + cache <= budget:
            return ServingLayout(tp, pp, tp, weights, cache)
    raise ValueError(f"no layout up to 4096 GPUs of {gpu_memory_gib} GiB fits {layout} at {context_len} tokens")


__all__ = [
    "BF16",
    "FP32",
    "GIB",
    "H100_BF16_DENSE_TFLOPS",
    "LAYOUTS",
    "SERVING_MEMORY_UTILIZATION",
    "ZERO3_BYTES_PER_PARAM",
    "Layout",
    "ParamCount",
    "ServingLayout",
    "attention_flops_per_token",
    "attention_kinds",
    "cache_bytes",
    "flops_per_token",
    "forward_flops_per_token",
    "param_count",
    "serving_memory",
    "suggest_serving",
    "tokens_per_day",
    "zero3_memory",
]
