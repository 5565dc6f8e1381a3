"""GQA attention of Ling-2.0 with per-head QK-RMSNorm before partial RoPE, and its key/value cache.

Shape legend: see ``layers.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .append_buffer import AppendBuffer
from .layers import RMSNorm, qk_norm_rotary


class KVCache:
    """Keys and values of every attention layer seen so far, for incremental decoding.

    ``update`` / ``get_seq_length`` follow the contract of transformers' ``DynamicCache``, so the attention
    accepts either (``generate()`` hands in a ``DynamicCache``). Each layer's keys and values live in an
    ``AppendBuffer``, so a decode step copies only its new token, not the whole cache.
    """

    def __init__(self) -> None:
        self.keys: list[AppendBuffer] = []
        self.values: list[AppendBuffer] = []

    def update(
        self, k_BGTK: torch.Tensor, v_BGTK: torch.Tensor, layer_idx: int, cache_kwargs: dict | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if layer_idx == len(self.keys):
            self.keys.append(AppendBuffer(k_BGTK, dim=2))
            self.values.append(AppendBuffer(v_BGTK, dim=2))
        elif layer_idx < len(self.keys):
            self.keys[layer_idx].append(k_BGTK)
            self.values[layer_idx].append(v_BGTK)
        else:
            raise ValueError(
                f"cache layers must be filled in order: got layer {layer_idx} with {len(self.keys)} cached"
            )
        return self.keys[layer_idx].tensor, self.values[layer_idx].tensor

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self.keys[layer_idx].length if layer_idx < len(self.keys) else 0

    def select_rows(self, rows: torch.Tensor) -> KVCache:
        """Keep batch rows ``rows`` (a LongTensor of indices) of every layer, in place; returns self."""
        for buffer in (*self.keys, *self.values):
            buffer.select_rows(rows)
        return self

    def live_bytes(self) -> dict[str, int]:
        """Bytes of keys and values held for the tokens seen (``total``) and allocated with spare capacity."""
        buffers = (*self.keys, *self.values)
        return {
            "total": sum(b.filled_bytes() for b in buffers),
            "allocated": sum(b.allocated_bytes() for b in buffers),
        }


def kv_cache_bytes_per_token(config, dtype: torch.dtype = torch.bfloat16) -> int:
    """Analytic key/value cache bytes per token of the GQA base: layers · 2 · G · K · bytes(dtype) (MTP layers
    are never cached). ``KVCache.live_bytes()["total"] / (batch · tokens)`` measures the same number."""
    dtype_bytes = torch.empty((), dtype=dtype).element_size()
    return config.num_hidden_layers * 2 * config.num_key_value_heads * config.head_dim * dtype_bytes


def attention_bias(
    attention_mask_BS: torch.Tensor | None, num_new: int, num_past: int, dtype: torch.dtype, device: torch.device
) -> torch.Tensor | None:
    """Additive mask [B or 1, 1, T, S]: causal over absolute positions, minus padded keys.

    Returns None when plain causal attention over the new tokens is all that is needed, so SDPA can take its
    ``is_causal`` path, and when one unpadded new token attends to every cached key (decode): no mask at all. Masked entries get the dtype's most negative finite value instead of -inf: a left-pad
    query that sees no real key then gets a finite (ignored) output rather than NaN.
    """
    if attention_mask_BS is None and (num_past == 0 or num_new == 1):
        return None
    num_keys = num_past + num_new
    query_pos = torch.arange(num_past, num_keys, device=device)[:, None]
    allowed_TS = torch.arange(num_keys, device=device)[None, :] <= query_pos
    allowed = allowed_TS[None]
    if attention_mask_BS is not None:
        if attention_mask_BS.shape[-1] != num_keys:
            raise ValueError(f"attention_mask covers {attention_mask_BS.shape[-1]} positions, expected {num_keys}")
        allowed = allowed & attention_mask_BS.bool()[:, None, :]
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device)
    return bias.masked_fill(~allowed, torch.finfo(dtype).min)[:, None]


def grouped_rows_decode(
    q_BH1K: torch.Tensor, k_BGSK: torch.Tensor, v_BGSK: torch.Tensor, bias_B11S: torch.Tensor | None
) -> torch.Tensor:
    """Attention of one query token [B, H, 1, K] over G key/value heads: the H / G query heads that share a
    key/value head become that head's query rows, so SDPA reads each cached key and value once for all of them
    (``enable_gqa`` runs one pass per query head: 1.6-2x slower at 16K context on this CPU, see
    ``benchmarks/long_context.py``). Query head h reads key/value head h // (H / G), the GQA convention; the
    padding mask [B, 1, 1, S] broadcasts over heads and rows alike."""
    B, H, _, K = q_BH1K.shape
    G = k_BGSK.shape[1]
    y_BGRK = F.scaled_dot_product_attention(q_BH1K.reshape(B, G, H // G, K), k_BGSK, v_BGSK, attn_mask=bias_B11S)
    return y_BGRK.reshape(B, H, 1, K)


class Attention(nn.Module):
    """Fused ``query_key_value`` projection -> QK-RMSNorm per head -> partial RoPE -> SDPA -> ``dense``."""

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        qkv_width = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        self.query_key_value = nn.Linear(config.hidden_size, qkv_width, bias=config.use_qkv_bias)
        if config.use_qk_norm:
            self.query_layernorm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.key_layernorm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.use_qk_norm = config.use_qk_norm
        self.dense = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=config.use_bias)

    def forward(
        self,
        x_BTD: torch.Tensor,
        cos_BTR: torch.Tensor,
        sin_BTR: torch.Tensor,
        bias_B1TS: torch.Tensor | None,
        cache: KVCache | None,
    ) -> torch.Tensor:
        B, T, _ = x_BTD.shape
        H, G = self.num_heads, self.num_kv_heads
        qkv_BTXK = self.query_key_value(x_BTD).view(B, T, H + 2 * G, self.head_dim)
        # Normalising before the rotation keeps the rotated and pass-through dims on one scale (official order).
        qk_norms = (self.query_layernorm, self.key_layernorm) if self.use_qk_norm else None
        qk_BXTK = qk_norm_rotary(qkv_BTXK[:, :, : H + G], qk_norms, H, cos_BTR, sin_BTR)
        q_BHTK, k_BGTK = qk_BXTK.split([H, G], dim=1)
        v_BGTK = qkv_BTXK[:, :, H + G :].transpose(1, 2)
        if cache is not None:
            k_BGTK, v_BGTK = cache.update(k_BGTK, v_BGTK, self.layer_idx)  # now [B, G, S, K]
        if T == 1:
            y_BHTK = grouped_rows_decode(q_BHTK, k_BGTK, v_BGTK, bias_B1TS)
        else:
            y_BHTK = F.scaled_dot_product_attention(
                q_BHTK, k_BGTK, v_BGTK, attn_mask=bias_B1TS, is_causal=bias_B1TS is None, enable_gqa=True
            )
        return self.dense(y_BHTK.transpose(1, 2).reshape(B, T, H * self.head_dim))
