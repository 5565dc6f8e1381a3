"""Model shape config. Field names are the official Hugging Face config keys of inclusionAI's releases
(``BailingMoeV2Config`` for the Ling-2.0 base, ``BailingMoeV2_5Config`` for the Ling-2.5/2.6 hybrid), so a
config dict exported from here is read unchanged by vLLM / SGLang and a released ``config.json`` loads here.
"""

from __future__ import annotations

from typing import Literal

from configs.base import ConfigError, config


@config
class RopeScalingConfig:
    """YaRN scaling of the MLA layers' rotary part (Peng et al. 2023), under DeepSeek-V3's key names, written into
    config.json as ``rope_scaling``. Set by the migration stage's context extension, never by hand."""

    rope_type: Literal["yarn"] = "yarn"
    # s = extended context / original context.
    factor: float
    original_max_position_embeddings: int
    # Frequencies turning more than beta_fast times over the original context keep their value, fewer than
    # beta_slow are divided by s; a ramp in between (YaRN's alpha/beta; 32 / 1 as in the paper and DeepSeek-V3).
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    # Temperature sqrt(1/t) = 0.1·m·ln(s) + 1: cos/sin carry mscale(m=mscale) / mscale(m=mscale_all_dim) and MLA's
    # softmax scale mscale(m=mscale_all_dim)², so 1 / 1 puts YaRN's whole temperature on every MLA dim.
    mscale: float = 1.0
    mscale_all_dim: float = 1.0

    def __post_init__(self) -> None:
        if self.factor < 1.0 or self.original_max_position_embeddings < 1 or self.beta_fast <= self.beta_slow:
            raise ConfigError(
                f"model.rope_scaling: need factor >= 1, a positive context, beta_fast > beta_slow: {self}"
            )


@config
class ModelConfig:
    # Shared Ling-2.0 (BailingMoeV2) keys.
    vocab_size: int = 157184
    hidden_size: int = 2048
    intermediate_size: int = 5120
    num_hidden_layers: int = 20
    num_attention_heads: int = 16
    num_key_value_heads: int = 4
    head_dim: int = 128
    hidden_act: Literal["silu"] = "silu"
    use_qkv_bias: bool = False
    use_bias: bool = False
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    rope_theta: float = 600000.0
    partial_rotary_factor: float = 0.5
    max_position_embeddings: int = 32768
    use_qk_norm: bool = True
    initializer_range: float = 0.006
    num_experts: int = 256
    num_shared_experts: int = 1
    num_experts_per_tok: int = 8
    n_group: int = 8
    topk_group: int = 4
    moe_intermediate_size: int = 512
    first_k_dense_replace: int = 1
    routed_scaling_factor: float = 2.5
    score_function: Literal["sigmoid"] = "sigmoid"
    moe_router_enable_expert_bias: bool = True
    router_dtype: Literal["fp32"] = "fp32"
    num_nextn_predict_layers: int = 1
    mtp_loss_scaling_factor: float = 0.1
    # Training-side MoE knobs (Megatron names in METHODS.md §1.1; not part of the HF config).
    router_bias_update_rate: float = 1e-3
    router_z_loss_coeff: float = 3.5e-6
    # Ling-2.5/2.6 hybrid keys (used once the model is migrated; see METHODS.md §2).
    layer_group_size: int = 8
    group_norm_size: int = 4
    linear_silu: bool = False
    lightning_chunk_size: int = 64
    q_lora_rank: int | None = 1536
    kv_lora_rank: int = 512
    qk_rope_head_dim: int = 64
    qk_nope_head_dim: int = 128
    v_head_dim: int = 128
    rope_interleave: bool = True
    # YaRN on the MLA rotary part after context extension (None: plain RoPE, as pre-trained).
    rope_scaling: RopeScalingConfig | None = None

    def __post_init__(self) -> None:
        checks = [
            (
                self.num_attention_heads % self.num_key_value_heads == 0,
                "num_attention_heads must be a multiple of num_key_value_heads",
            ),
            (self.num_experts % self.n_group == 0, "num_experts must be a multiple of n_group"),
            (0 < self.topk_group <= self.n_group, "topk_group must lie in 1..n_group"),
            (
                self.num_experts_per_tok <= (self.num_experts // self.n_group) * self.topk_group,
                "num_experts_per_tok exceeds the experts in the kept groups",
            ),
            (
                0 <= self.first_k_dense_replace <= self.num_hidden_layers,
                "first_k_dense_replace must lie in 0..num_hidden_layers",
            ),
            (0.0 < self.partial_rotary_factor <= 1.0, "partial_rotary_factor must lie in (0, 1]"),
            (int(self.head_dim * self.partial_rotary_factor) % 2 == 0, "rotary dim must be even"),
            (self.layer_group_size >= 1, "layer_group_size must be >= 1"),
            (
                (self.num_attention_heads * self.head_dim) % self.group_norm_size == 0,
                "num_attention_heads * head_dim must be divisible by group_norm_size",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"model: {message} (got {self})")

    @property
    def rotary_dim(self) -> int:
        return int(self.head_dim * self.partial_rotary_factor)

    @property
    def layer_types(self) -> tuple[str, ...]:
        """Per-layer attention kind of the hybrid: the official Ling-2.5/2.6 rule (METHODS.md §2.1)."""
        g, n = self.layer_group_size, self.num_hidden_layers
        full_groups_end = (n // g) * g
        return tuple(
            "full_attention" if (i + 1) % g == 0 or i >= full_groups_end else "linear_attention" for i in range(n)
        )


def tiny_model() -> ModelConfig:
    """~1-5 M parameters: every Ling feature kept, shapes small enough to train on 2 CPU cores (METHODS §1.3)."""
    return ModelConfig(
        vocab_size=1024,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=32,
        rope_theta=10000.0,
        # The migration's context extension trains at 1024 = 8x pre-training's 128 (YaRN on the MLA rope).
        max_position_embeddings=1024,
        num_experts=16,
        num_experts_per_tok=2,
        n_group=4,
        topk_group=2,
        moe_intermediate_size=64,
        first_k_dense_replace=1,
        initializer_range=0.02,
        layer_group_size=4,
        group_norm_size=2,
        lightning_chunk_size=16,
        q_lora_rank=48,
        kv_lora_rank=32,
        qk_rope_head_dim=16,
        qk_nope_head_dim=16,
        v_head_dim=32,
    )


def small_gpu_model() -> ModelConfig:
    """~0.5 B total / ~80 M active: one GPU, hours not weeks."""
    return ModelConfig(
        vocab_size=32768,
        hidden_size=768,
        intermediate_size=2048,
        num_hidden_layers=16,
        num_attention_heads=12,
        num_key_value_heads=4,
        head_dim=64,
        # Pre-trained at 2,048, extended to 16,384 by the migration's mid-training (YaRN on the MLA rope).
        max_position_embeddings=16384,
        num_experts=64,
        num_experts_per_tok=4,
        n_group=8,
        topk_group=4,
        moe_intermediate_size=256,
        group_norm_size=4,
        q_lora_rank=384,
        kv_lora_rank=256,
        qk_rope_head_dim=32,
        qk_nope_head_dim=64,
        v_head_dim=64,
        lightning_chunk_size=64,
        layer_group_size=8,
    )


def ling26_flash_model() -> ModelConfig:
    """Ling-2.6-flash shape (104 B total / 7.4 B active, 32 layers, 4 MLA + 28 Lightning).

    Attention / MoE widths follow the public Ling-flash-2.0 config; the MLA ranks are the 2.6 report's.
    """
    return ModelConfig(
        hidden_size=4096,
        intermediate_size=9216,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=4,
        moe_intermediate_size=1024,
        first_k_dense_replace=1,
        # The paper's mid-training ends at 256K (METHODS §3.1).
        max_position_embeddings=262144,
        layer_group_size=8,
        group_norm_size=8,
    )


def ling26_1t_model() -> ModelConfig:
    """Ling-2.6-1T shape (80 layers, 10 MLA + 70 Lightning, 64 heads of 128, 4 dense prefix layers)."""
    return ModelConfig(
        hidden_size=8192,
        intermediate_size=18432,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        moe_intermediate_size=2048,
        first_k_dense_replace=4,
        # The paper's mid-training ends at 256K (METHODS §3.1).
        max_position_embeddings=262144,
        layer_group_size=8,
        group_norm_size=8,
    )
