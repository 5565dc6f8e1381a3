"""Ling-2.5/2.6 hybrid causal LM (official ``BailingMoeV2_5Model``): Lightning layers with MLA every
``layer_group_size``-th layer, the Ling-2.0 MoE / dense FFNs, and an MTP layer with MLA attention.

    input_ids -> word_embeddings -> layers[0 .. L-1] -> norm -> lm_head -> logits
    layer ℓ:  h = h + Attn_ℓ(RMSNorm(h));  h = h + FFN_ℓ(RMSNorm(h))
              Attn_ℓ = MLA if config.layer_types[ℓ] == "full_attention" else Lightning
              FFN_ℓ  = dense SwiGLU for ℓ < first_k_dense_replace, sparse MoE after
    MTP layers ``layers[L + k]`` as in ``decoder.py``, their attention MLA.

Which layer is which is data: ``config.layer_types`` (the official rule, also written into the exported
config.json). Two rotary tables: ``rotary_emb`` (rotate-half over head_dim · partial_rotary_factor, Lightning)
and ``rotary_emb_mla`` (over qk_rope_head_dim, applied interleaved by MLA). With the released shapes the two
hold the same cos/sin; they differ in how the layers apply them.

The call contract is the base model's (``ling2.causal_lm_forward``): the same arguments and ``Ling2Output``,
with a ``HybridCache`` as ``past_key_values``, so the native generation engine runs either model unchanged.
A left-padded row equals its unpadded sequence: positions count real tokens only, MLA masks padded keys and
Lightning layers zero padded values. Shape legend: see ``layers.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .attention import attention_bias
from .decoder import shift_left
from .hybrid_cache import HybridCache
from .layers import RMSNorm, RotaryEmbedding, SwiGLUMLP, yarn_params
from .lightning_attention import Backend, DecayRule, LightningAttention, lightning_log_decay
from .ling2 import BackboneOutput, CausalLM, default_position_ids
from .mla import MultiLatentAttention
from .moe import Routing, SparseMoeBlock

LAYER_TYPES = ("linear_attention", "full_attention")


@dataclass
class LayerInputs:
    """What every layer of one forward shares."""

    cos_BTR: torch.Tensor  # rotate-half table (Lightning)
    sin_BTR: torch.Tensor
    cos_mla_BTR: torch.Tensor  # interleaved table (MLA)
    sin_mla_BTR: torch.Tensor
    bias_B1TS: torch.Tensor | None  # additive causal + padding mask (MLA)
    pad_mask_BT: torch.Tensor | None  # 1 for the real new tokens (Lightning)
    token_mask_N: torch.Tensor | None  # the same, flattened (router statistics)


class HybridDecoderLayer(nn.Module):
    def __init__(self, config, layer_idx: int, layer_type: str, moe: bool) -> None:
        super().__init__()
        self.layer_type = layer_type
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        if layer_type == "full_attention":
            self.attention = MultiLatentAttention(config, layer_idx)
        else:
            self.attention = LightningAttention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SparseMoeBlock(config) if moe else SwiGLUMLP(config.hidden_size, config.intermediate_size)

    def forward(
        self, h_BTD: torch.Tensor, inputs: LayerInputs, cache: HybridCache | None
    ) -> tuple[torch.Tensor, Routing | None]:
        x_BTD = self.input_layernorm(h_BTD)
        if self.layer_type == "full_attention":
            y_BTD = self.attention(x_BTD, inputs.cos_mla_BTR, inputs.sin_mla_BTR, inputs.bias_B1TS, cache)
        else:
            y_BTD = self.attention(x_BTD, inputs.cos_BTR, inputs.sin_BTR, inputs.pad_mask_BT, cache)
        h_BTD = h_BTD + y_BTD
        x_BTD = self.post_attention_layernorm(h_BTD)
        if isinstance(self.mlp, SparseMoeBlock):
            y_BTD, routing = self.mlp(x_BTD, inputs.token_mask_N)
            return h_BTD + y_BTD, routing
        return h_BTD + self.mlp(x_BTD), None


class HybridMTPLayer(HybridDecoderLayer):
    """The MTP layer of ``decoder.MTPLayer`` (enorm, hnorm, eh_proj, final_layernorm) around an MLA MoE layer."""

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__(config, layer_idx, "full_attention", moe=True)
        self.enorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.hnorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * config.hidden_size, config.hidden_size, bias=False)
        self.final_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self, emb_next_BTD: torch.Tensor, h_prev_BTD: torch.Tensor, inputs: LayerInputs
    ) -> tuple[torch.Tensor, Routing | None]:
        h_BTD = self.eh_proj(torch.cat((self.enorm(emb_next_BTD), self.hnorm(h_prev_BTD)), dim=-1))
        h_BTD, routing = super().forward(h_BTD, inputs, None)
        return self.final_layernorm(h_BTD), routing


def check_layer_types(config) -> list[str]:
    layer_types = list(config.layer_types)
    if len(layer_types) != config.num_hidden_layers or not set(layer_types) <= set(LAYER_TYPES):
        raise ValueError(f"layer_types must be {config.num_hidden_layers} of {LAYER_TYPES}, got {layer_types}")
    return layer_types


class HybridModel(nn.Module):
    """Embeddings, hybrid decoder layers, final norm, MTP layers, rotary tables; the ``model.`` prefix."""

    def __init__(self, config) -> None:
        super().__init__()
        self.num_main_layers = config.num_hidden_layers
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        main = [
            HybridDecoderLayer(config, i, kind, moe=i >= config.first_k_dense_replace)
            for i, kind in enumerate(check_layer_types(config))
        ]
        mtp = [HybridMTPLayer(config, config.num_hidden_layers + k) for k in range(config.num_nextn_predict_layers)]
        self.layers = nn.ModuleList(main + mtp)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.partial_rotary_factor, config.rope_theta)
        # YaRN (``config.rope_scaling``, set by context extension) scales only MLA's table: the Lightning layers'
        # rotary stays as trained (docs/decisions.md, context extension).
        self.rotary_emb_mla = RotaryEmbedding(
            config.qk_rope_head_dim, 1.0, config.rope_theta, getattr(config, "rope_scaling", None)
        )

    def forward(
        self,
        input_ids_BT: torch.Tensor,
        attention_mask_BS: torch.Tensor | None = None,
        position_ids_BT: torch.Tensor | None = None,
        past_key_values: HybridCache | None = None,
        use_cache: bool = False,
        with_mtp: bool = False,
    ) -> BackboneOutput:
        T = input_ids_BT.shape[1]
        cache = past_key_values
        if cache is not None and not isinstance(cache, HybridCache):
            # transformers' generate() hands in an empty DynamicCache; a filled one cannot hold these layers.
            if cache.get_seq_length() != 0:
                raise TypeError(f"the hybrid model needs a HybridCache, got a filled {type(cache).__name__}")
            cache = HybridCache()
        if cache is None and use_cache:
            cache = HybridCache()
        if with_mtp and cache is not None:
            raise ValueError("the MTP layers run on whole sequences: pass labels without a cache")
        num_past = cache.get_seq_length() if cache is not None else 0
        if position_ids_BT is None:
            position_ids_BT = default_position_ids(attention_mask_BS, num_past, T, input_ids_BT.device)
        pad_mask_BT = None if attention_mask_BS is None else attention_mask_BS[:, -T:]

        h_BTD = self.word_embeddings(input_ids_BT)
        cos_BTR, sin_BTR = self.rotary_emb(position_ids_BT, h_BTD.dtype)
        cos_mla_BTR, sin_mla_BTR = self.rotary_emb_mla(position_ids_BT, h_BTD.dtype)
        inputs = LayerInputs(
            cos_BTR, sin_BTR, cos_mla_BTR, sin_mla_BTR,
            bias_B1TS=attention_bias(attention_mask_BS, T, num_past, h_BTD.dtype, h_BTD.device),
            pad_mask_BT=pad_mask_BT,
            token_mask_N=None if pad_mask_BT is None else pad_mask_BT.reshape(-1).bool(),
        )  # fmt: skip
        routings = []
        for layer in self.layers[: self.num_main_layers]:
            h_BTD, routing = layer(h_BTD, inputs, cache)
            if routing is not None:
                routings.append(routing)
        h_BTD = self.norm(h_BTD)
        if cache is not None:
            cache.advance(T)

        mtp_hidden = []
        if with_mtp:
            ids_BT, h_prev_BTD = input_ids_BT, h_BTD
            for mtp_layer in self.layers[self.num_main_layers :]:
                ids_BT = shift_left(ids_BT, fill=0)
                h_prev_BTD, routing = mtp_layer(self.word_embeddings(ids_BT), h_prev_BTD, inputs)
                mtp_hidden.append(h_prev_BTD)
                routings.append(routing)
        return BackboneOutput(h_BTD, tuple(mtp_hidden), tuple(routings), cache)


class HybridForCausalLM(CausalLM):
    """The trainable hybrid: ``HybridModel`` + ``lm_head``; decodes with a ``HybridCache``."""

    backbone = HybridModel


def model_log_decays(config, rule: DecayRule = "official") -> dict[int, torch.Tensor]:
    """The Lightning log-decays g [H] fp32 of every linear layer of ``config`` under ``rule`` ("official": the
    HF reference the checkpoints were trained with; "vllm": what vLLM serves them with)."""
    return {
        i: torch.tensor(lightning_log_decay(config.num_attention_heads, i, config.num_hidden_layers, rule))
        for i, kind in enumerate(check_layer_types(config))
        if kind == "linear_attention"
    }


def set_decay_rule(model: nn.Module, rule: DecayRule) -> None:
    """Switch every Lightning layer of ``model`` to the decay formula ``rule`` (for the mismatch report)."""
    for module in model.modules():
        if isinstance(module, LightningAttention):
            module.set_decay_rule(rule)


def set_rope_scaling(model: nn.Module, scaling) -> None:
    """Give a built hybrid the MLA rope scaling ``scaling`` (None: plain RoPE): its MLA rotary table and every
    MLA layer's softmax temperature. The caller updates ``model.config`` so an export carries the same."""
    for module in model.modules():
        if isinstance(module, HybridModel):
            module.rotary_emb_mla.scaling = yarn_params(scaling)
        elif isinstance(module, MultiLatentAttention):
            module.set_rope_scaling(scaling)


def set_lightning_backend(model: nn.Module, backend: Backend) -> None:
    """Force every Lightning layer onto one implementation: "torch", "kernels", or "auto"."""
    for module in model.modules():
        if isinstance(module, LightningAttention):
            module.backend = backend
