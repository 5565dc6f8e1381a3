"""Hugging Face config of Ling-2.0 (``model_type`` "bailing_moe_v2"), with the keys of inclusionAI's releases.

Copied into every exported checkpoint; it imports nothing from this repository. The conversion to and from
the repository's ``configs.model.ModelConfig`` lives in ``model/export.py``.
"""

from __future__ import annotations

from typing import ClassVar

from transformers import PretrainedConfig


class BailingMoeV2Config(PretrainedConfig):
    """Defaults are the Ling-mini-2.0 shape; released configs also set ``partial_rotary_factor`` 0.5.

    Besides the official keys, three that vLLM reads are explicit: ``use_rmsnorm`` (True: QK-norm is RMSNorm,
    not LayerNorm), ``norm_topk_prob`` (True: top-k weights are renormalised) and ``embedding_dropout`` (0).
    """

    model_type = "bailing_moe_v2"
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
    # Absent from a config.json means full rotary, as the reference attention and vLLM read it.
    partial_rotary_factor: float = 1.0
    max_position_embeddings: int = 32768
    use_qk_norm: bool = True
    use_rmsnorm: bool = True
    initializer_range: float = 0.006
    num_experts: int = 256
    num_shared_experts: int = 1
    num_experts_per_tok: int = 8
    n_group: int = 8
    topk_group: int = 4
    moe_intermediate_size: int = 512
    first_k_dense_replace: int = 1
    routed_scaling_factor: float = 2.5
    score_function: str = "sigmoid"
    moe_router_enable_expert_bias: bool = True
    norm_topk_prob: bool = True
    router_dtype: str = "fp32"
    num_nextn_predict_layers: int = 0
    mtp_loss_scaling_factor: float = 0.0
    embedding_dropout: float = 0.0
    use_cache: bool = True
    pad_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
