"""Ling-2.0 (BailingMoeV2) building blocks: RMSNorm, partial rotary embedding, SwiGLU MLP.

Shape legend for every file of the architecture (layers, attention, moe, ling2):
    B batch, T new tokens in this call, S keys attended (cached + new), D hidden size,
    H query heads, G key/value heads, K head dim, R rotary dims (K * partial_rotary_factor),
    N tokens flattened (B * T), E routed experts, A experts per token, I MLP width, V vocab.

These files import only torch and each other (relatively): they are copied next to an exported
checkpoint so that ``trust_remote_code`` loads the very same code (see ``model/export.py``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def rms_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x) over the last dim, computed in fp32 and cast back to x's dtype (no weight).

    One fused ``F.rms_norm`` call rather than pow / mean / rsqrt / mul: decoding one token runs ~20 norms
    per layer stack, where each op's dispatch costs more than its arithmetic.
    """
    return F.rms_norm(x.float(), x.shape[-1:], eps=eps).to(x.dtype)


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 and cast back before the scale (the official order)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32 and self.weight.dtype == torch.float32:
            return F.rms_norm(x, x.shape[-1:], self.weight, self.eps)  # the same math, one op
        return self.weight * rms_normalize(x, self.eps)


def qk_norm_rotary(
    qk_BTXK: torch.Tensor,
    qk_norms: tuple[RMSNorm, RMSNorm] | None,
    num_q_heads: int,
    cos_BTR: torch.Tensor,
    sin_BTR: torch.Tensor,
) -> torch.Tensor:
    """Per-head QK-RMSNorm (``qk_norms`` = (query norm, key norm), or None for none) then partial RoPE, on
    queries and keys at once.

    ``qk_BTXK`` holds the query heads then the key heads (X = H + G), as they leave the fused projection; each
    half gets its own norm weight. Equal to normalising and rotating q and k separately, in half the ops.
    Returns [B, X, T, K].
    """
    if qk_norms is not None:
        q_norm, k_norm = qk_norms
        num_k_heads = qk_BTXK.shape[2] - num_q_heads
        weight_XK = torch.cat(
            (q_norm.weight.expand(num_q_heads, -1), k_norm.weight.expand(num_k_heads, -1))
        )  # fmt: skip
        qk_BTXK = weight_XK * rms_normalize(qk_BTXK, q_norm.eps)
    return apply_partial_rotary(qk_BTXK.transpose(1, 2), cos_BTR, sin_BTR)


class RotaryEmbedding(nn.Module):
    """cos/sin tables for NeoX-style (rotate-half) RoPE over the first R = K * partial_rotary_factor dims.

    The inverse frequencies are recomputed per call (R / 2 numbers) rather than kept in a buffer, so a model
    built on the meta device or cast to bf16 never carries stale or rounded frequencies.
    """

    def __init__(self, head_dim: int, partial_rotary_factor: float, theta: float) -> None:
        super().__init__()
        self.rotary_dim = int(head_dim * partial_rotary_factor)
        self.theta = theta

    def forward(self, position_ids_BT: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        exponents = torch.arange(0, self.rotary_dim, 2, device=position_ids_BT.device, dtype=torch.float32)
        inv_freq = 1.0 / (self.theta ** (exponents / self.rotary_dim))  # [R/2]
        freqs_BTr = position_ids_BT.float()[..., None] * inv_freq
        angles_BTR = torch.cat((freqs_BTr, freqs_BTr), dim=-1)
        return angles_BTR.cos().to(dtype), angles_BTR.sin().to(dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_partial_rotary(x_BHTK: torch.Tensor, cos_BTR: torch.Tensor, sin_BTR: torch.Tensor) -> torch.Tensor:
    """Rotate the first R dims of every head; dims R..K pass through unchanged (Ling uses R = K / 2)."""
    rotary_dim = cos_BTR.shape[-1]
    rot, rest = x_BHTK[..., :rotary_dim], x_BHTK[..., rotary_dim:]
    cos, sin = cos_BTR[:, None], sin_BTR[:, None]  # broadcast over heads
    return torch.cat((rot * cos + rotate_half(rot) * sin, rest), dim=-1)


class SwiGLUMLP(nn.Module):
    """down(silu(gate(x)) * up(x)); the dense layers, every routed expert and the shared expert."""

    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
