"""Ling-2.0 (BailingMoeV2) causal language model in plain PyTorch.

    input_ids [B, T] -> word_embeddings -> layers[0 .. L-1] (dense for the first ``first_k_dense_replace``,
    MoE after) -> norm -> lm_head -> logits [B, T, V]
    training adds the MTP layers ``layers[L .. L+n-1]`` on top of the normed hidden states:
    loss = CE(logits_t, x_{t+1}) + mtp_loss_scaling_factor * sum_k CE(mtp_logits_k,t, x_{t+k+1})
           + router_z_loss_coeff * sum over MoE layers of mean_t logsumexp(router_logits_t)^2

Module names are the official checkpoint names, so ``state_dict()`` is the released layout as is. The MTP
layers sit at ``model.layers.{L + k}`` with L = num_hidden_layers, where SGLang and vLLM's MTP loaders look
for them (the reference HF file counts them inside num_hidden_layers instead; ``export.load_hf`` reads both).

``config`` is any object with the official attribute names: ``configs.model.ModelConfig`` for training,
``BailingMoeV2Config`` inside a Hugging Face checkpoint. Shape legend: see ``layers.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attention import KVCache, attention_bias
from .decoder import DecoderLayer, MTPLayer, shift_left
from .layers import RMSNorm, RotaryEmbedding
from .moe import Router, RouterStats, Routing, SparseMoeBlock, collect_router_stats

IGNORE_INDEX = -100


@dataclass
class BackboneOutput:
    hidden_BTD: torch.Tensor  # after the final norm
    mtp_hidden: tuple[torch.Tensor, ...]  # one [B, T, D] per MTP depth; empty unless requested
    routings: tuple[Routing, ...]
    past_key_values: KVCache | None


@dataclass
class Ling2Output:
    logits: torch.Tensor  # [B, T, V] fp32
    loss: torch.Tensor | None = None
    lm_loss: torch.Tensor | None = None
    mtp_loss: torch.Tensor | None = None
    router_stats: RouterStats | None = None
    past_key_values: KVCache | None = None


def default_position_ids(attention_mask_BS: torch.Tensor | None, num_past: int, num_new: int, device) -> torch.Tensor:
    """Positions of the new tokens; with a (left-)padding mask they count real tokens only, so a padded row
    sees the same positions as the unpadded sequence."""
    if attention_mask_BS is None:
        return torch.arange(num_past, num_past + num_new, device=device)[None]
    return (attention_mask_BS.long().cumsum(-1) - 1).clamp(min=0)[:, -num_new:]


class Ling2Model(nn.Module):
    """Embeddings, decoder layers, final norm, and the MTP layers; the ``model.`` prefix of the checkpoint."""

    def __init__(self, config) -> None:
        super().__init__()
        self.num_main_layers = config.num_hidden_layers
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        main = [DecoderLayer(config, i, moe=i >= config.first_k_dense_replace) for i in range(config.num_hidden_layers)]
        mtp = [MTPLayer(config, config.num_hidden_layers + k) for k in range(config.num_nextn_predict_layers)]
        self.layers = nn.ModuleList(main + mtp)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary_emb = RotaryEmbedding(config.head_dim, config.partial_rotary_factor, config.rope_theta)

    def forward(
        self,
        input_ids_BT: torch.Tensor,
        attention_mask_BS: torch.Tensor | None = None,
        position_ids_BT: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        with_mtp: bool = False,
    ) -> BackboneOutput:
        T = input_ids_BT.shape[1]
        cache = past_key_values if past_key_values is not None else (KVCache() if use_cache else None)
        if with_mtp and cache is not None:
            raise ValueError("the MTP layers run on whole sequences: pass labels without a KV cache")
        num_past = cache.get_seq_length() if cache is not None else 0
        if position_ids_BT is None:
            position_ids_BT = default_position_ids(attention_mask_BS, num_past, T, input_ids_BT.device)
        token_mask_N = None if attention_mask_BS is None else attention_mask_BS[:, -T:].reshape(-1).bool()

        h_BTD = self.word_embeddings(input_ids_BT)
        cos_BTR, sin_BTR = self.rotary_emb(position_ids_BT, h_BTD.dtype)
        bias_B1TS = attention_bias(attention_mask_BS, T, num_past, h_BTD.dtype, h_BTD.device)
        routings = []
        for layer in self.layers[: self.num_main_layers]:
            h_BTD, routing = layer(h_BTD, cos_BTR, sin_BTR, bias_B1TS, cache, token_mask_N)
            if routing is not None:
                routings.append(routing)
        h_BTD = self.norm(h_BTD)

        mtp_hidden = []
        if with_mtp:
            ids_BT, h_prev_BTD = input_ids_BT, h_BTD
            for mtp_layer in self.layers[self.num_main_layers :]:
                # Token id 0 fills the end, as in the reference; its targets are ignored by the loss anyway.
                ids_BT = shift_left(ids_BT, fill=0)
                h_prev_BTD, routing = mtp_layer(
                    self.word_embeddings(ids_BT), h_prev_BTD, cos_BTR, sin_BTR, bias_B1TS, token_mask_N
                )
                mtp_hidden.append(h_prev_BTD)
                routings.append(routing)
        return BackboneOutput(h_BTD, tuple(mtp_hidden), tuple(routings), cache)


def shifted_cross_entropy(logits_BTV: torch.Tensor, labels_BT: torch.Tensor, shift: int) -> torch.Tensor:
    """Mean CE of logits[:, t] against labels[:, t + shift], over targets that exist and are not -100.

    ``labels`` are aligned with ``input_ids`` (the Hugging Face convention); the last ``shift`` positions have
    no target. The mean runs over valid targets only and is 0 (with a graph) when there are none.
    """
    targets_BT = torch.cat((labels_BT[:, shift:], torch.full_like(labels_BT[:, :shift], IGNORE_INDEX)), dim=1)
    total = F.cross_entropy(
        logits_BTV.float().flatten(0, 1), targets_BT.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return total / (targets_BT != IGNORE_INDEX).sum().clamp(min=1)


def causal_lm_forward(
    backbone: Ling2Model,
    lm_head: nn.Linear,
    config,
    input_ids: torch.Tensor,
    labels: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    past_key_values: KVCache | None = None,
    use_cache: bool = False,
    position_ids: torch.Tensor | None = None,
) -> Ling2Output:
    """The forward shared by ``Ling2ForCausalLM``, ``hybrid.HybridForCausalLM`` and their Hugging Face wrappers."""
    with_mtp = labels is not None and config.num_nextn_predict_layers > 0
    out = backbone(input_ids, attention_mask, position_ids, past_key_values, use_cache, with_mtp)
    logits_BTV = lm_head(out.hidden_BTD).float()
    stats = collect_router_stats(out.routings)
    if labels is None:
        return Ling2Output(logits=logits_BTV, router_stats=stats, past_key_values=out.past_key_values)

    lm_loss = shifted_cross_entropy(logits_BTV, labels, shift=1)
    loss = lm_loss
    mtp_loss = None
    if out.mtp_hidden:
        # Depth k (1-based) predicts x_{t+k+1}; depths add up, each weighted like the reference implementation.
        mtp_loss = sum(
            shifted_cross_entropy(lm_head(h_BTD), labels, shift=depth + 2) for depth, h_BTD in enumerate(out.mtp_hidden)
        )
        loss = loss + config.mtp_loss_scaling_factor * mtp_loss
    # A Hugging Face config carries no training knobs: its z-loss coefficient is 0.
    z_loss_coeff = getattr(config, "router_z_loss_coeff", 0.0)
    if z_loss_coeff and stats is not None:
        loss = loss + z_loss_coeff * stats.z_loss
    return Ling2Output(
        logits=logits_BTV, loss=loss, lm_loss=lm_loss, mtp_loss=mtp_loss, router_stats=stats,
        past_key_values=out.past_key_values,
    )  # fmt: skip


def init_module(module: nn.Module, std: float, init=nn.init) -> None:
    """normal(0, std) for every matrix (embeddings, projections, experts, router), ones for norms, zeros for
    biases and the expert bias. ``init`` is ``torch.nn.init`` or ``transformers.initialization`` (same names;
    the latter skips tensors already loaded from a checkpoint)."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        init.normal_(module.weight, mean=0.0, std=std)
        if getattr(module, "bias", None) is not None:
            init.zeros_(module.bias)
    elif isinstance(module, Router):
        init.normal_(module.weight, mean=0.0, std=std)
        init.zeros_(module.expert_bias)
    elif isinstance(module, RMSNorm):
        init.ones_(module.weight)


class CausalLM(nn.Module):
    """A trainable causal LM: ``model`` (a ``backbone`` built from ``config``) + ``lm_head``, initialised from
    ``config``; ``forward`` is ``causal_lm_forward``. Subclasses name the backbone."""

    backbone: type[nn.Module]

    def __init__(self, config) -> None:
        super().__init__()
        self.config = config
        self.model = self.backbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.apply(lambda m: init_module(m, config.initializer_range))
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.word_embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values=None,
        use_cache: bool = False,
        position_ids: torch.Tensor | None = None,
    ) -> Ling2Output:
        return causal_lm_forward(
            self.model, self.lm_head, self.config, input_ids,
            labels=labels, attention_mask=attention_mask, past_key_values=past_key_values, use_cache=use_cache,
            position_ids=position_ids,
        )  # fmt: skip


class Ling2ForCausalLM(CausalLM):
    """The Ling-2.0 base: ``Ling2Model`` + ``lm_head``; decodes with a ``KVCache``."""

    backbone = Ling2Model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, active per token). Total counts every stored parameter, MTP layers included; active counts the
    inference path of one token: embeddings, lm_head, every main layer with only A of its E routed experts,
    no MTP layer (it is only trained, or used as a draft model).

    Works for every architecture built from these blocks: an MTP layer is any module with an ``eh_proj``
    (``MTPLayer`` here, ``HybridMTPLayer`` in the hybrid), a MoE layer any ``SparseMoeBlock`` outside them."""
    total = sum(p.numel() for p in model.parameters())
    inactive = 0
    mtp_layers = [m for m in model.modules() if isinstance(m, MTPLayer) or hasattr(m, "eh_proj")]
    inside_mtp = {id(sub) for layer in mtp_layers for sub in layer.modules()}
    for layer in mtp_layers:
        inactive += sum(p.numel() for p in layer.parameters())
    for module in model.modules():
        if isinstance(module, SparseMoeBlock) and id(module) not in inside_mtp:
            per_expert = sum(p.numel() for p in module.experts[0].parameters())
            inactive += (module.num_experts - module.gate.top_k) * per_expert
    return total, total - inactive
