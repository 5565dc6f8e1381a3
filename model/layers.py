"""Ling-2.0 (BailingMoeV2) building blocks: RMSNorm, partial rotary embedding, SwiGLU MLP.

Shape legend for every file of the architecture (layers, attention, moe, ling2):
    B batch, T new tokens in this call, S keys attended (cached + new), D hidden size,
    H query heads, G key/value heads, K head dim, R rotary dims (K * partial_rotary_factor),
    N tokens flattened (B * T), E routed experts, A experts per token, I MLP width, V vocab.

These files import only torch and each other (relatively): they are copied next to an exported
checkpoint so that ``trust_remote_code`` loads the very same code (see ``model/export.py``).
"""

from __future__ import annotations

import math

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


def rope_inv_freq(rotary_dim: int, theta: float, device: torch.device | None = None) -> torch.Tensor:
    """[R/2] the plain RoPE inverse frequencies theta^(-2i/R), highest frequency first."""
    exponents = torch.arange(0, rotary_dim, 2, device=device, dtype=torch.float32)
    return 1.0 / (theta ** (exponents / rotary_dim))


def yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    """YaRN's attention temperature sqrt(1/t) = 0.1 · mscale · ln(s) + 1 (Peng et al. 2023, Eq. 22; 1 for s <= 1)."""
    return 1.0 if factor <= 1.0 else 0.1 * mscale * math.log(factor) + 1.0


def yarn_inv_freq(
    rotary_dim: int,
    theta: float,
    factor: float,
    original_max_position_embeddings: int,
    beta_fast: float = 32.0,
    beta_slow: float = 1.0,
    device: torch.device | None = None,
) -> torch.Tensor:
    """[R/2] YaRN's NTK-by-parts inverse frequencies (Peng et al. 2023, §3.2; DeepSeek-V3's implementation).

    A frequency that turns more than ``beta_fast`` times over the original context keeps its value (it never
    saw a new angle), one that turns fewer than ``beta_slow`` times is divided by ``factor`` (interpolated into
    angles it saw), and a linear ramp over the dims between the two blends them. ``factor`` 1 is plain RoPE.
    """
    plain = rope_inv_freq(rotary_dim, theta, device)
    if factor == 1.0:
        return plain

    def dim_of(rotations: float) -> float:
        # The dim index whose frequency makes ``rotations`` full turns over the original context.
        return (
            rotary_dim * math.log(original_max_position_embeddings / (rotations * 2 * math.pi)) / (2 * math.log(theta))
        )

    low = max(math.floor(dim_of(beta_fast)), 0)
    high = min(math.ceil(dim_of(beta_slow)), rotary_dim - 1)
    span = max(high - low, 1e-3)
    ramp = ((torch.arange(rotary_dim // 2, device=device, dtype=torch.float32) - low) / span).clamp(0, 1)  # [R/2]
    return plain * (1 - ramp) + (plain / factor) * ramp


def rope_scaling_value(scaling, key: str, default=None):
    """``key`` of a rope_scaling given as a mapping (Hugging Face config.json) or an object (our ModelConfig)."""
    if isinstance(scaling, dict):
        return scaling.get(key, default)
    return getattr(scaling, key, default)


def yarn_params(scaling):
    """``scaling`` when it names YaRN, else None: our ``RopeScalingConfig``, or a Hugging Face rope dict, where
    transformers 5 turns a plain config into ``{"rope_type": "default", ...}``."""
    if scaling is None:
        return None
    kind = rope_scaling_value(scaling, "rope_type") or rope_scaling_value(scaling, "type")
    if kind in (None, "default"):
        return None
    if kind != "yarn":
        raise ValueError(f"rope scaling {kind!r} is not supported (only yarn)")
    return scaling


class RotaryEmbedding(nn.Module):
    """cos/sin tables for NeoX-style (rotate-half) RoPE over the first R = K * partial_rotary_factor dims,
    optionally YaRN-scaled (``scaling``: factor, original_max_position_embeddings, beta_fast, beta_slow, mscale,
    mscale_all_dim, the DeepSeek-V3 keys). Under YaRN cos/sin carry mscale(s, mscale) / mscale(s, mscale_all_dim);
    the rest of the temperature is the attention's (MLA scales all its dims by mscale(s, mscale_all_dim)²).

    The inverse frequencies are recomputed per call (R / 2 numbers) rather than kept in a buffer, so a model
    built on the meta device or cast to bf16 never carries stale or rounded frequencies.
    """

    def __init__(self, head_dim: int, partial_rotary_factor: float, theta: float, scaling=None) -> None:
        super().__init__()
        self.rotary_dim = int(head_dim * partial_rotary_factor)
        self.theta = theta
        self.scaling = yarn_params(scaling)

    def inv_freq(self, device: torch.device | None = None) -> torch.Tensor:
        if self.scaling is None:
            return rope_inv_freq(self.rotary_dim, self.theta, device)
        s = self.scaling
        return yarn_inv_freq(
            self.rotary_dim, self.theta, rope_scaling_value(s, "factor"),
            rope_scaling_value(s, "original_max_position_embeddings"), rope_scaling_value(s, "beta_fast", 32.0),
            rope_scaling_value(s, "beta_slow", 1.0), device,
        )  # fmt: skip

    def attention_factor(self) -> float:
        if self.scaling is None:
            return 1.0
        factor = rope_scaling_value(self.scaling, "factor")
        return yarn_mscale(factor, rope_scaling_value(self.scaling, "mscale", 1.0)) / yarn_mscale(
            factor, rope_scaling_value(self.scaling, "mscale_all_dim", 1.0)
        )

    def forward(self, position_ids_BT: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.inv_freq(position_ids_BT.device)  # [R/2]
        freqs_BTr = position_ids_BT.float()[..., None] * inv_freq
        angles_BTR = torch.cat((freqs_BTr, freqs_BTr), dim=-1)
        cos_BTR, sin_BTR = angles_BTR.cos(), angles_BTR.sin()
        scale = self.attention_factor()
        if scale != 1.0:
            cos_BTR, sin_BTR = cos_BTR * scale, sin_BTR * scale
        return cos_BTR.to(dtype), sin_BTR.to(dtype)


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
