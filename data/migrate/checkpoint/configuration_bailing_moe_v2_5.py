"""Hugging Face config of the Ling-2.5/2.6 hybrid (``BailingMoeV2_5Config``), with the keys of inclusionAI's
``models/configuration_bailing_moe_v2_5.py`` (Ring-V2.5 repository) and of their released config.json files.

Copied into every exported hybrid checkpoint; it imports nothing from this repository. The conversion to and
from ``configs.model.ModelConfig`` lives in ``model/export_hybrid.py``.
"""

from __future__ import annotations

from typing import ClassVar

from transformers import PretrainedConfig


def official_layer_types(num_hidden_layers: int, layer_group_size: int) -> list[str]:
    """Layer ℓ is softmax (MLA) iff (ℓ + 1) % layer_group_size == 0 or ℓ lies in the trailing incomplete group."""
    full_groups_end = num_hidden_layers // layer_group_size * layer_group_size
    return [
        "full_attention" if (i + 1) % layer_group_size == 0 or i >= full_groups_end else "linear_attention"
        for i in range(num_hidden_layers)
    ]


class BailingMoeV2_5Config(PretrainedConfig):
    """Defaults follow the official configuration file, except the special-token ids (None here).

    The official file sets no ``model_type``; "bailing_hybrid" is the one the released checkpoints and vLLM's
    MTP / speculative-decoding config code use. ``layer_types`` is derived from ``layer_group_size`` when
    absent (the official rule) and written out, so a reader sees which layer is which. ``qk_head_dim`` is
    derived, as in the official file.
    """

    model_type = "bailing_hybrid"
    keys_to_ignore_at_inference: ClassVar[list[str]] = ["past_key_values"]

    vocab_size: int = 157184
    hidden_size: int = 2048
    intermediate_size: int = 5120
    num_hidden_layers: int = 20
    num_attention_heads: int = 16
    num_key_value_heads: int = 4
    head_dim: int = 128
    hidden_act: str = "silu"
    use_qkv_bias: bool = False
    use_bias: bool = False
    rms_norm_eps: float = 1e-6
    tie_word_embeddings: bool = False
    rope_theta: float = 600000.0
    rope_parameters: dict | None = None
    partial_rotary_factor: float = 0.5
    max_position_embeddings: int = 32768
    use_qk_norm: bool = True
    initializer_range: float = 0.02
    num_experts: int = 256
    num_shared_experts: int = 1
    num_experts_per_tok: int = 8
    n_group: int = 8
    topk_group: int = 4
    moe_intermediate_size: int = 512
    first_k_dense_replace: int = 1
    routed_scaling_factor: float = 1.0
    score_function: str = "sigmoid"
    scoring_func: str = "sigmoid"
    topk_method: str = "noaux_tc"
    moe_router_enable_expert_bias: bool = True
    norm_topk_prob: bool = True
    router_dtype: str = "fp32"
    num_nextn_predict_layers: int = 0
    mtp_loss_scaling_factor: float = 0.0
    embedding_dropout: float = 0.0
    attention_dropout: float = 0.0
    output_dropout: float = 0.0
    layer_group_size: int = 5
    group_norm_size: int = 4
    linear_silu: bool = False
    q_lora_rank: int | None = None
    kv_lora_rank: int = 512
    qk_rope_head_dim: int = 64
    qk_nope_head_dim: int = 128
    v_head_dim: int = 128
    qk_head_dim: int | None = None
    rope_interleave: bool = True
    layer_types: list[str] | None = None
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None

    def __post_init__(self, **kwargs):
        if self.qk_head_dim is None:
            self.qk_head_dim = self.qk_nope_head_dim + self.qk_rope_head_dim
        if self.layer_types is None:
            self.layer_types = official_layer_types(self.num_hidden_layers, self.layer_group_size)
        super().__post_init__(**kwargs)
