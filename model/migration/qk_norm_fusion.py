"""Step 3a of the migration (METHODS §3.1, Eq. 1-2): QK-Norm removal by calibration fusion.

QK-Norm divides each head's q (and k) by its per-token RMS, which no fixed matrix can do, and which blocks
MLA's weight absorption. Fusion replaces the per-token RMS by its calibration average and folds γ into the rows:

    Ŵ_q,h ← diag(γ_Q) · W_q,h / sqrt( (1/(N·K)) Σ_t Σ_j q_h,tj² + ε )          (Eq. 1)
    Ŵ_k,g ← diag(γ_K) · W_k,g / sqrt( (1/(N·K)) Σ_t Σ_j k_g,tj² + ε )          (Eq. 2)

with q_h,t = W_q,h x_t the pre-norm projection of calibration token t, one statistic per head and layer
[assumption of METHODS §3.1]. The fused projection reproduces the normed q/k exactly when every token has the
same per-head RMS, and is approximate otherwise (tests measure both). Only the softmax (still GQA) layers are
fused: the Lightning layers keep their QK-Norm.

Shape legend: see ``model/layers.py``; N calibration tokens.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .calibration import Batch, collect_attention_inputs
from .interim import InterimGQAAttention, interim_layers


@dataclass
class QKNormStats:
    """Calibration RMS of one layer's pre-norm projections: sqrt(mean q² + ε) per head."""

    q_rms_H: torch.Tensor  # fp64
    k_rms_G: torch.Tensor  # fp64
    num_tokens: int


@dataclass
class QKNormFusion:
    """What step 3a did, per fused layer index: the statistics and the fused ``query_key_value`` weight."""

    stats: dict[int, QKNormStats]
    weights: dict[int, torch.Tensor]


def qk_rms_statistics(attention: InterimGQAAttention, x_ND: torch.Tensor) -> QKNormStats:
    """Eq. 1-2 denominators of ``attention`` (which still has its QK-Norm) on calibration inputs ``x_ND``."""
    H, G, K = attention.num_heads, attention.num_kv_heads, attention.head_dim
    w = attention.query_key_value.weight.detach().double().cpu()
    proj_NW = x_ND.double() @ w.T
    q_NHK, k_NGK, _ = proj_NW.view(-1, H + 2 * G, K).split([H, G, G], dim=1)
    eps = attention.query_layernorm.eps
    return QKNormStats(
        q_rms_H=(q_NHK.pow(2).mean(dim=(0, 2)) + eps).sqrt(),
        k_rms_G=(k_NGK.pow(2).mean(dim=(0, 2)) + eps).sqrt(),
        num_tokens=x_ND.shape[0],
    )


def fused_qkv_weight(attention: InterimGQAAttention, stats: QKNormStats) -> torch.Tensor:
    """``query_key_value.weight`` with QK-Norm folded in (Eq. 1-2), in the weight's dtype; v rows unchanged."""
    K = attention.head_dim
    gamma_q = attention.query_layernorm.weight.detach().double().cpu()
    gamma_k = attention.key_layernorm.weight.detach().double().cpu()
    q_scale_HK = gamma_q[None] / stats.q_rms_H[:, None]
    k_scale_GK = gamma_k[None] / stats.k_rms_G[:, None]
    v_scale = torch.ones(attention.num_kv_heads * K, dtype=torch.float64)
    row_scale = torch.cat((q_scale_HK.flatten(), k_scale_GK.flatten(), v_scale))
    w = attention.query_key_value.weight.detach()
    return (w.double().cpu() * row_scale[:, None]).to(device=w.device, dtype=w.dtype)


@torch.no_grad()
def fuse_qk_norm(
    model: nn.Module, calibration_batches: Iterable[Batch], *, inplace: bool = False
) -> tuple[nn.Module, QKNormFusion]:
    """Step 3a on every softmax layer of an intermediate hybrid (``gqa_to_hybrid``) that still has QK-Norm.
    Returns the fused model (a copy unless ``inplace``) and the statistics / fused weights per layer."""
    fused = model if inplace else copy.deepcopy(model)
    layers = {i: a for i, a in interim_layers(fused).items() if a.use_qk_norm}
    if not layers:
        raise ValueError("no GQA softmax layer with QK-Norm to fuse (run gqa_to_hybrid first; fuse only once)")
    inputs = collect_attention_inputs(fused, calibration_batches, sorted(layers))
    result = QKNormFusion(stats={}, weights={})
    for i, attention in layers.items():
        stats = qk_rms_statistics(attention, inputs[i].x_ND)
        weight = fused_qkv_weight(attention, stats)
        attention.query_key_value.weight.copy_(weight)
        attention.remove_qk_norm()
        result.stats[i], result.weights[i] = stats, weight
    return fused, result
