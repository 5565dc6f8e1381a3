"""Per-head, per-layer decay of Lightning attention (METHODS.md §2.2).

Shape legend: H = number of heads. ``g`` is the per-head log-decay, negative; the decay factor applied to
the state at every step is λ_h = exp(g_h).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

DecayRule = Literal["official", "vllm"]


def _alibi_slopes(n: int) -> list[float]:
    if math.log2(n).is_integer():
        start = 2.0 ** (-8.0 / n)
        return [start ** (h + 1) for h in range(n)]
    # ALiBi interleave rule: the slopes of the closest lower power of two, then every other slope of
    # twice that, so the extra heads fall between the existing ones.
    closest = 2 ** math.floor(math.log2(n))
    return _alibi_slopes(closest) + _alibi_slopes(2 * closest)[0::2][: n - closest]


def lightning_slopes(num_heads: int) -> torch.Tensor:
    """ALiBi slopes, fp32 [H]: slope_h = start^(h+1), start = 2^(-8/H)."""
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")
    return torch.tensor(_alibi_slopes(num_heads), dtype=torch.float32)


def lightning_log_decay(num_heads: int, layer_idx: int, num_layers: int, rule: DecayRule = "official") -> torch.Tensor:
    """Log-decay g, fp32 [H], for 0-based layer ``layer_idx`` of ``num_layers``.

    official (HF ``BailingMoeV2_5LinearAttention``): g_h = -slope_h · (1 - (ℓ-1)/(L-1) + 1e-5)
    vllm (vLLM's Bailing/MiniMax layer):             g_h = -slope_h · (1 - ℓ/(L-1) + 1e-5)

    With a single layer (L == 1) both ratios are 0/0; we take the ratio as 0, so the factor is 1 + 1e-5
    and the layer uses the plain slopes.
    """
    if not 0 <= layer_idx < num_layers:
        raise ValueError(f"layer_idx must lie in [0, {num_layers}), got {layer_idx}")
    if rule == "official":
        offset = layer_idx - 1
    elif rule == "vllm":
        offset = layer_idx
    else:
        raise ValueError(f"rule must be 'official' or 'vllm', got {rule!r}")
    if num_heads < 1:
        raise ValueError(f"num_heads must be >= 1, got {num_heads}")
    ratio = offset / (num_layers - 1) if num_layers > 1 else 0.0
    factor = 1.0 - ratio + 1e-5
    # Multiply in float64 and round once, so the two rules differ only by the factor.
    return torch.tensor([-slope * factor for slope in _alibi_slopes(num_heads)], dtype=torch.float32)
