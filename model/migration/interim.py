"""The migration's intermediate model: the hybrid with its softmax layers still GQA (METHODS §3.1 steps 1-3b).

Between the Lightning conversion (step 1) and the MLA conversion (step 3c) the recipe trains a model whose
linear layers are already Lightning while the layers that will become MLA are still the base's GQA attention
(step 2 and step 3b train it). That model is a ``HybridForCausalLM`` in which the ``full_attention`` layers (and
the MTP layers, whose hybrid attention is MLA too) hold an ``InterimGQAAttention``: the base ``Attention`` with
the base's module names, so its state-dict keys are the Ling-2.0 keys, called with the hybrid layer's arguments.

The hybrid hands its softmax layers the MLA rotary table (``rotary_emb_mla``, qk_rope_head_dim dims). It equals
the base's rotate-half table exactly when qk_rope_head_dim == head_dim · partial_rotary_factor, which the
builder requires (the MLA conversion needs it too: the shared rope key has one slot per base rope frequency).

The interim layer keeps its keys and values in the ``HybridCache`` latent slot of its layer ([k ; v] flattened
per token, G·K + G·K numbers), so the intermediate model decodes with the same cache as the final one.

Shape legend: see ``model/layers.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from model.attention import Attention
from model.hybrid import HybridForCausalLM, check_layer_types
from model.hybrid_cache import HybridCache


class _LatentSlotKV:
    """``KVCache.update`` on top of ``HybridCache.update_latent``: keys and values of G heads as one latent."""

    def __init__(self, cache: HybridCache) -> None:
        self.cache = cache

    def update(self, k_BGTK: torch.Tensor, v_BGTK: torch.Tensor, layer_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        B, G, T, K = k_BGTK.shape
        kv_BTL = torch.cat((k_BGTK, v_BGTK), dim=1).transpose(1, 2).reshape(B, T, 2 * G * K)
        kv_BSL = self.cache.update_latent(layer_idx, kv_BTL)
        k_BSGK, v_BSGK = kv_BSL.unflatten(-1, (2 * G, K)).split(G, dim=2)
        return k_BSGK.transpose(1, 2), v_BSGK.transpose(1, 2)


class InterimGQAAttention(Attention):
    """Ling-2.0 GQA attention in a hybrid softmax slot. ``use_qk_norm`` turns False (and the norm modules go)
    once step 3a has fused QK-Norm into ``query_key_value`` (``remove_qk_norm``)."""

    def forward(
        self,
        x_BTD: torch.Tensor,
        cos_BTR: torch.Tensor,
        sin_BTR: torch.Tensor,
        bias_B1TS: torch.Tensor | None,
        cache: HybridCache | None,
    ) -> torch.Tensor:
        return super().forward(x_BTD, cos_BTR, sin_BTR, bias_B1TS, None if cache is None else _LatentSlotKV(cache))

    def remove_qk_norm(self) -> None:
        self.use_qk_norm = False
        for name in ("query_layernorm", "key_layernorm"):
            if hasattr(self, name):
                delattr(self, name)


def check_migration_config(config) -> None:
    """Shapes the migration relies on (ValueError otherwise)."""
    if config.qk_rope_head_dim != config.rotary_dim:
        raise ValueError(
            f"qk_rope_head_dim ({config.qk_rope_head_dim}) must equal head_dim * partial_rotary_factor "
            f"({config.rotary_dim}): the MLA rope key takes one slot per rope frequency of the GQA base"
        )
    if config.use_qkv_bias:
        raise ValueError("use_qkv_bias=True is not supported by the migration (no released Ling model uses it)")


def softmax_layer_indices(model: nn.Module) -> list[int]:
    """Indices in ``model.model.layers`` of the layers that are (or will become) MLA: the ``full_attention``
    layers and the MTP layers."""
    config = model.config
    main = [i for i, kind in enumerate(check_layer_types(config)) if kind == "full_attention"]
    return main + [config.num_hidden_layers + k for k in range(config.num_nextn_predict_layers)]


def build_interim_hybrid(config, *, qk_norm: bool = True) -> HybridForCausalLM:
    """A freshly initialised hybrid whose softmax layers are ``InterimGQAAttention`` (with QK-Norm unless
    ``qk_norm`` is False: the structure after step 3a). Also what a checkpoint of steps 2 / 3b loads into."""
    check_migration_config(config)
    model = HybridForCausalLM(config)
    for i in softmax_layer_indices(model):
        layer = model.model.layers[i]
        attention = InterimGQAAttention(config, layer_idx=i)
        if not qk_norm:
            attention.remove_qk_norm()
        layer.attention = attention
    return model


def interim_layers(model: nn.Module) -> dict[int, InterimGQAAttention]:
    """{layer index: interim GQA attention} of a model from ``build_interim_hybrid`` / ``gqa_to_hybrid``."""
    return {
        i: layer.attention
        for i, layer in enumerate(model.model.layers)
        if isinstance(layer.attention, InterimGQAAttention)
    }
