"""Paper-scale planner: parameters, ZeRO-3 memory, cache bytes, FLOPs and throughput of a profile, computed from its
``ModelConfig`` and cluster sizes alone (no model is built, no torch imported), for both layouts the pipeline
trains: the Ling-2.0 base (GQA, ``model.ling2``; pre-training) and the Ling-2.5/2.6 hybrid (Lightning + MLA,
``model.hybrid``; migration onwards, and what is served).

    python -m configs.plan --profile ling26_1t [--mfu 0.4] [--gpus N] [--peak-tflops 989] [--serve-context 32768]
        [--serve-batch 8] [--no-log]

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

import argparse
import json
from dataclasses import dataclass
from typing import Literal

from configs.model import ModelConfig

Layout = Literal["base", "hybrid"]
LAYOUTS: tuple[Layout, ...] = ("base", "hybrid")
LAYOUT_NAMES = {"base": "Ling-2.0 base (GQA)", "hybrid": "Ling-2.6 hybrid (Lightning + MLA)"}

# bf16 weight + bf16 gradient + fp32 master weight + fp32 Adam m + fp32 Adam v.
ZERO3_BYTES_PER_PARAM = 2 + 2 + 4 + 4 + 4
BF16 = 2
FP32 = 4
# NVIDIA H100 / H200 SXM: 989.4 dense bf16 TFLOPS (both chips share the compute; H200 has more, faster memory).
H100_BF16_DENSE_TFLOPS = 989.0
CONTEXTS = (4096, 32768, 262144)
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


@dataclass(frozen=True)
class Cluster:
    """The sizes the planner reads from ``cfg.cluster`` (``configs.cluster.ClusterConfig``)."""

    data_parallel: int
    tensor_parallel: int
    expert_parallel: int
    gpus_per_node: int
    gpu_memory_gib: float


def build_plan(
    cfg, cluster: Cluster, *, gpus: int, mfu: float, peak_tflops: float, serve_batch: int, serve_context: int
) -> dict[str, dict[str, float]]:
    """Every row of the table as {row key: {layout: value}}: numbers only, units in the key."""
    m = cfg.model
    # Pre-training trains the base; migration (and everything after) the hybrid, each at its own window.
    train_shape = {
        "base": (cfg.pretrain.loop.micro_batch_size, cfg.pretrain.loop.seq_len),
        "hybrid": (cfg.migrate.micro_batch_size, cfg.migrate.seq_len),
    }
    dp = cluster.data_parallel
    loop, mig = cfg.pretrain.loop, cfg.migrate
    migrate_steps = sum(
        phase.steps for phase in (mig.linear_warmup, mig.partial_training, mig.mla_warmup, mig.continued_pretraining)
    )
    # Each stage's token budget: steps x micro-batch x accumulation x window x data-parallel ranks.
    stage_tokens = {
        "base": loop.max_steps * loop.micro_batch_size * loop.grad_accum_steps * loop.seq_len * dp,
        "hybrid": migrate_steps * mig.micro_batch_size * mig.grad_accum_steps * mig.seq_len * dp,
    }
    rows: dict[str, dict[str, float]] = {}

    def put(key: str, layout: Layout, value: float) -> None:
        rows.setdefault(key, {})[layout] = float(value)

    for layout in LAYOUTS:
        count = param_count(m, layout)
        put("params_total", layout, count.main)
        put("params_mtp", layout, count.mtp)
        put("params_embedding", layout, count.embedding)
        put("params_non_embedding", layout, count.main - count.embedding)
        put("params_active", layout, count.active)
        put("params_active_non_embedding", layout, count.active_non_embedding)
        micro_batch, seq_len = train_shape[layout]
        memory = zero3_memory(
            m, layout, data_parallel=cluster.data_parallel, micro_batch_size=micro_batch, seq_len=seq_len
        )
        for part, value in memory.items():
            put(f"zero3_{part}_gib_per_gpu", layout, value / GIB)
        put("zero3_fits_gpu", layout, memory["total"] <= cluster.gpu_memory_gib * GIB)
        with_ep = zero3_memory(
            m, layout, data_parallel=cluster.data_parallel, micro_batch_size=micro_batch, seq_len=seq_len,
            expert_parallel=cluster.expert_parallel,
        )  # fmt: skip
        put("zero3_total_with_ep_gib_per_gpu", layout, with_ep["total"] / GIB)
        for context in CONTEXTS:
            cache = cache_bytes(m, layout, context)
            put(f"cache_kib_per_token_{context // 1024}k", layout, cache["per_token_amortised"] / 1024)
            put(f"cache_mib_per_sequence_{context // 1024}k", layout, cache["per_sequence"] / 2**20)
        flops = flops_per_token(m, layout, seq_len)
        put("train_seq_len", layout, seq_len)
        put("forward_gflop_per_token", layout, flops["forward"] / 1e9)
        put("attention_gflop_per_token", layout, flops["forward_attention"] / 1e9)
        put("training_gflop_per_token", layout, flops["training"] / 1e9)
        put("six_n_gflop_per_token", layout, 6 * count.active_non_embedding / 1e9)
        per_day = tokens_per_day(flops["training"], gpus=gpus, mfu=mfu, peak_tflops=peak_tflops)
        put("tokens_per_day_billions", layout, per_day / 1e9)
        put("stage_tokens_trillions", layout, stage_tokens[layout] / 1e12)
        put("stage_days", layout, stage_tokens[layout] / per_day)
        weights, cache = serving_memory(
            m, layout, tensor_parallel=cluster.tensor_parallel, pipeline_parallel=1,
            context_len=serve_context, batch=serve_batch,
        )  # fmt: skip
        put("serve_configured_gib_per_gpu", layout, (weights + cache) / GIB)
        suggestion = suggest_serving(
            m, layout, gpu_memory_gib=cluster.gpu_memory_gib, gpus_per_node=cluster.gpus_per_node,
            context_len=serve_context, batch=serve_batch,
        )  # fmt: skip
        put("serve_suggested_tp", layout, suggestion.tensor_parallel)
        put("serve_suggested_ep", layout, suggestion.expert_parallel)
        put("serve_suggested_pp", layout, suggestion.pipeline_parallel)
        put("serve_suggested_gib_per_gpu", layout, (suggestion.weights_per_gpu + suggestion.cache_per_gpu) / GIB)
    return rows


ROW_LABELS = {
    "params_total": "total parameters (no MTP), B",
    "params_mtp": "MTP layer parameters, B",
    "params_embedding": "embedding + lm_head, B",
    "params_non_embedding": "non-embedding parameters, B",
    "params_active": "active parameters per token, B",
    "params_active_non_embedding": "active non-embedding, B",
    "zero3_model_states_gib_per_gpu": "ZeRO-3 model states (16 B/param / DP), GiB/GPU",
    "zero3_gathered_layers_gib_per_gpu": "ZeRO-3 working set (2 × largest layer + stacked experts), GiB/GPU",
    "zero3_activations_gib_per_gpu": "activations (checkpointed) + fp32 logits, GiB/GPU",
    "zero3_total_gib_per_gpu": "ZeRO-3 training total, GiB/GPU",
    "zero3_fits_gpu": "fits the GPU (1 = yes)",
    "zero3_total_with_ep_gib_per_gpu": "same, experts over cluster.expert_parallel (DeepSpeed-MoE, not our engine)",
    "train_seq_len": "training window (tokens)",
    "forward_gflop_per_token": "forward GFLOP/token",
    "attention_gflop_per_token": "  of which attention mixing",
    "training_gflop_per_token": "training GFLOP/token (3 × fwd, MTP incl.)",
    "six_n_gflop_per_token": "6N (Kaplan) GFLOP/token, for reference",
    "tokens_per_day_billions": "training tokens/day, B",
    "stage_tokens_trillions": "stage tokens (pretrain / migrate phases), T",
    "stage_days": "days for those tokens at this rate",
    "serve_configured_gib_per_gpu": "serving at cluster TP, GiB/GPU",
    "serve_suggested_tp": "suggested serving TP",
    "serve_suggested_ep": "suggested serving EP",
    "serve_suggested_pp": "suggested serving PP (nodes)",
    "serve_suggested_gib_per_gpu": "suggested layout, GiB/GPU",
}
for _context in CONTEXTS:
    ROW_LABELS[f"cache_kib_per_token_{_context // 1024}k"] = f"cache @{_context // 1024}K, KiB/token (amortised)"
    ROW_LABELS[f"cache_mib_per_sequence_{_context // 1024}k"] = f"cache @{_context // 1024}K, MiB/sequence"


def _format(key: str, value: float) -> str:
    if key.startswith("params_"):
        return f"{value / 1e9:.3f}"
    if value.is_integer() and abs(value) < 1e7:
        return f"{int(value)}"
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


def render_table(rows: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per quantity, one column per layout."""
    lines = [f"| quantity | {' | '.join(LAYOUT_NAMES[lay] for lay in LAYOUTS)} |", "|---|---:|---:|"]
    for key, values in rows.items():
        cells = " | ".join(_format(key, values[lay]) for lay in LAYOUTS)
        lines.append(f"| {ROW_LABELS[key]} | {cells} |")
    return "\n".join(lines)


# Where the pipeline leaves each layout's Hugging Face checkpoint (model/export.py, model/export_hybrid.py).
CHECKPOINTS = {"base": "data/pretrain/checkpoint", "hybrid": "data/publish/hf_model"}


def serving_commands(rows: dict[str, dict[str, float]]) -> str:
    """``vllm serve`` and SGLang launch lines per layout at the suggested layout (printed, not run here)."""
    lines = []
    for layout in LAYOUTS:
        tp = int(rows["serve_suggested_tp"][layout])
        pp = int(rows["serve_suggested_pp"][layout])
        path = CHECKPOINTS[layout]
        vllm = f"vllm serve {path} --trust-remote-code --tensor-parallel-size {tp} --enable-expert-parallel"
        sglang = f"python -m sglang.launch_server --model-path {path} --trust-remote-code --tp {tp * pp} --ep {tp * pp}"
        if pp > 1:
            vllm += f" --pipeline-parallel-size {pp}"
            sglang += f" --nnodes {pp} --node-rank $NODE_RANK --dist-init-addr $HEAD_IP:5000"
        lines += [f"# {LAYOUT_NAMES[layout]}", vllm, sglang]
    return "\n".join(lines)


def cluster_of(cfg) -> Cluster:
    c = cfg.cluster
    return Cluster(
        data_parallel=c.data_parallel,
        tensor_parallel=c.tensor_parallel,
        expert_parallel=c.expert_parallel,
        gpus_per_node=max(1, c.gpus_per_node),
        # A CPU profile names no GPU; plan it against one H100 (80 GB) so its rows still read as GPU numbers.
        gpu_memory_gib=c.gpu_memory_gib or 80,
    )


def log_plan(cfg, rows: dict[str, dict[str, float]], table: str, params: dict[str, float | int | str]) -> str:
    """One MLflow run in the profile's experiment (the project's embedded store unless configured): the inputs as
    params, every row as a ``<layout>.<row>`` metric, the table and the rows as artifacts. Returns the run id."""
    import mlflow

    from lineage.runs import configure

    configure(cfg.lineage.experiment, cfg.lineage.tracking_uri)
    with mlflow.start_run(run_name=f"plan-{cfg.profile}", tags={"ling26.plan": cfg.profile}) as run:
        mlflow.log_params(params)
        mlflow.log_metrics({f"{lay}.{key}": values[lay] for key, values in rows.items() for lay in LAYOUTS})
        mlflow.log_text(table, "plan.md")
        mlflow.log_dict(rows, "plan.json")
        return run.info.run_id


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    from configs.pipeline import PROFILES, resolve

    parser = argparse.ArgumentParser(
        prog="python -m configs.plan",
        description="Print a profile's paper-scale plan (parameters, ZeRO-3 memory per GPU, cache bytes, FLOPs, "
        "tokens per day, serving layout) for the Ling-2.0 base and the Ling-2.6 hybrid, and log it to MLflow "
        "(params, one metric per row, the table as plan.md) in the project's store. Nothing is trained or built.",
    )
    parser.add_argument("--profile", default="ling26_1t", choices=sorted(PROFILES))
    parser.add_argument("--overrides", default=None, help="dotted overrides, as `workflows.cli run --overrides`")
    parser.add_argument("--mfu", type=float, default=0.4, help="model FLOPs utilisation for tokens/day (0.4)")
    parser.add_argument(
        "--gpus", type=int, default=None, help="GPUs training for tokens/day (default: cluster.data_parallel)"
    )
    parser.add_argument(
        "--peak-tflops", type=float, default=H100_BF16_DENSE_TFLOPS,
        help=f"per-GPU peak dense bf16 TFLOPS (default {H100_BF16_DENSE_TFLOPS:g}: H100/H200 SXM, no sparsity)",
    )  # fmt: skip
    parser.add_argument(
        "--serve-batch", type=int, default=8, help="concurrent sequences for the serving layout (8)"
    )  # fmt: skip
    parser.add_argument(
        "--serve-context", type=int, default=32768,
        help="tokens per serving sequence (32768; at most model.max_position_embeddings)",
    )  # fmt: skip
    parser.add_argument(
        "--log", action=argparse.BooleanOptionalAction, default=True,
        help="log the plan to MLflow as a run named plan-<profile> (default); --no-log only prints",
    )  # fmt: skip
    args = parser.parse_args(argv)
    cfg = resolve(args.profile, args.overrides)
    cluster = cluster_of(cfg)
    gpus = args.gpus or cluster.data_parallel
    serve_context = min(args.serve_context, cfg.model.max_position_embeddings)
    rows = build_plan(
        cfg, cluster, gpus=gpus, mfu=args.mfu, peak_tflops=args.peak_tflops, serve_batch=args.serve_batch,
        serve_context=serve_context,
    )  # fmt: skip
    table = render_table(rows)
    inputs = {
        "profile": cfg.profile, "data_parallel": cluster.data_parallel, "tensor_parallel": cluster.tensor_parallel,
        "expert_parallel": cluster.expert_parallel, "gpus_per_node": cluster.gpus_per_node,
        "gpu_memory_gib": cluster.gpu_memory_gib, "gpus": gpus, "mfu": args.mfu, "peak_tflops": args.peak_tflops,
        "serve_batch": args.serve_batch, "serve_context": serve_context,
    }  # fmt: skip
    print(f"plan for {cfg.profile}: {json.dumps(inputs)}")
    print(table)
    print("serving at the suggested layouts (not run here):")
    print(serving_commands(rows))
    if args.log:
        print(f"logged to MLflow run {log_plan(cfg, rows, table, inputs)}")
    return rows


__all__ = [
    "Cluster",
    "ParamCount",
    "ServingLayout",
    "attention_flops_per_token",
    "build_plan",
    "cache_bytes",
    "flops_per_token",
    "forward_flops_per_token",
    "param_count",
    "render_table",
    "serving_memory",
    "suggest_serving",
    "tokens_per_day",
    "zero3_memory",
]


if __name__ == "__main__":
    main()
