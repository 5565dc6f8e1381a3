"""Ling-2.0 decoder layer and its multi-token-prediction (MTP) layer.

    DecoderLayer:  h = h + Attn(RMSNorm(h));  h = h + FFN(RMSNorm(h))
                   FFN = dense SwiGLU for layer_idx < first_k_dense_replace, sparse MoE after.
    MTPLayer (depth k, DeepSeek-V3 style, official ``BailingMoeV2MTPLayer``):
                   e  = Emb(x_{t+k})
                   h' = eh_proj(concat(enorm(e), hnorm(h_prev)))     eh_proj: 2D -> D
                   h' = final_layernorm(DecoderLayer_MoE(h'))
                   and the shared lm_head on h' predicts x_{t+k+1}.

Shape legend: see ``layers.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention import Attention, KVCache
from .layers import RMSNorm, SwiGLUMLP
from .moe import Routing, SparseMoeBlock


class DecoderLayer(nn.Module):
    def __init__(self, config, layer_idx: int, moe: bool) -> None:
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attention = Attention(config, layer_idx)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = SparseMoeBlock(config) if moe else SwiGLUMLP(config.hidden_size, config.intermediate_size)

    def forward(
        self,
        h_BTD: torch.Tensor,
        cos_BTR: torch.Tensor,
        sin_BTR: torch.Tensor,
        bias_B1TS: torch.Tensor | None,
        cache: KVCache | None,
        token_mask_N: torch.Tensor | None,
    ) -> tuple[torch.Tensor, Routing | None]:
        h_BTD = h_BTD + self.attention(self.input_layernorm(h_BTD), cos_BTR, sin_BTR, bias_B1TS, cache)
        x_BTD = self.post_attention_layernorm(h_BTD)
        if isinstance(self.mlp, SparseMoeBlock):
            y_BTD, routing = self.mlp(x_BTD, token_mask_N)
            return h_BTD + y_BTD, routing
        return h_BTD + self.mlp(x_BTD), None


class MTPLayer(DecoderLayer):
    """A MoE decoder layer wrapped by the embedding/hidden fusion in front and a final norm behind."""

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__(config, layer_idx, moe=True)
        self.enorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.hnorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.eh_proj = nn.Linear(2 * config.hidden_size, config.hidden_size, bias=False)
        self.final_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self,
        emb_next_BTD: torch.Tensor,
        h_prev_BTD: torch.Tensor,
        cos_BTR: torch.Tensor,
        sin_BTR: torch.Tensor,
        bias_B1TS: torch.Tensor | None,
        token_mask_N: torch.Tensor | None,
    ) -> tuple[torch.Tensor, Routing | None]:
        h_BTD = self.eh_proj(torch.cat((self.enorm(emb_next_BTD), self.hnorm(h_prev_BTD)), dim=-1))
        h_BTD, routing = super().forward(h_BTD, cos_BTR, sin_BTR, bias_B1TS, None, token_mask_N)
        return self.final_layernorm(h_BTD), routing


def shift_left(ids_BT: torch.Tensor, fill: int) -> torch.Tensor:
    """ids[:, t + 1], with ``fill`` where t + 1 runs past the end."""
    return torch.cat((ids_BT[:, 1:], torch.full_like(ids_BT[:, :1], fill)), dim=1)
