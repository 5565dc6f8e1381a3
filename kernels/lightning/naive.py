"""Pure-torch Lightning attention: the specification every faster kernel is tested against
(METHODS.md §2.2), and the torch fallback when Triton is not used.

Shape legend: B batch, T sequence length, H heads, K query/key head dim, V value head dim, C chunk
length (the last chunk may be shorter). q, k, v are [B, T, H, *]; the state is [B, H, K, V].
g [H] is the per-head log-decay (negative); λ_h = exp(g_h).

Both functions compute in fp32 (fp64 if given fp64), return o in q's dtype and the state in the compute
dtype, so the state never accumulates in bf16.
"""

from __future__ import annotations

import torch

from kernels.lightning.inputs import check_inputs


def _upcast(q, k, v, g, initial_state):
    dtype = torch.promote_types(q.dtype, torch.float32)
    # [B, T, H, D] -> [B, H, T, D] so a head's sequence is contiguous in the loops below.
    q_BHTK, k_BHTK, v_BHTV = (x.transpose(1, 2).to(dtype) for x in (q, k, v))
    B, H, _, K = q_BHTK.shape
    V = v_BHTV.shape[-1]
    S_BHKV = q_BHTK.new_zeros(B, H, K, V) if initial_state is None else initial_state.to(dtype)
    return q_BHTK, k_BHTK, v_BHTV, g.to(dtype), S_BHKV


def naive_recurrent_lightning(
    q: torch.Tensor,  # [B, T, H, K]
    k: torch.Tensor,  # [B, T, H, K]
    v: torch.Tensor,  # [B, T, H, V]
    g: torch.Tensor,  # [H]
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,  # [B, H, K, V]
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The definition: S_t = λ S_{t-1} + k_tᵀ v_t ; o_t = scale · q_t S_t.
    Returns (o [B, T, H, V], final state [B, H, K, V] or None)."""
    _, T, _, K, _ = check_inputs(q, k, v, g, initial_state)
    scale = K**-0.5 if scale is None else scale
    q_BHTK, k_BHTK, v_BHTV, g_H, S_BHKV = _upcast(q, k, v, g, initial_state)
    decay_H11 = g_H.exp()[:, None, None]
    outputs = []
    for t in range(T):
        kv_BHKV = k_BHTK[:, :, t, :, None] * v_BHTV[:, :, t, None, :]
        S_BHKV = decay_H11 * S_BHKV + kv_BHKV
        outputs.append(torch.einsum("bhk,bhkv->bhv", q_BHTK[:, :, t] * scale, S_BHKV))
    o_BTHV = torch.stack(outputs, dim=1).to(q.dtype)
    return o_BTHV, (S_BHKV if output_final_state else None)


def naive_chunk_lightning(
    q: torch.Tensor,  # [B, T, H, K]
    k: torch.Tensor,  # [B, T, H, K]
    v: torch.Tensor,  # [B, T, H, V]
    g: torch.Tensor,  # [H]
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,  # [B, H, K, V]
    output_final_state: bool = False,
    chunk_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The Lightning-Attention-2 intra/inter split over chunks of ``chunk_size`` (local index i):
        O_b = scale · [ ((Q_b K_bᵀ) ⊙ M) V_b + (Q_b ⊙ λ^(i+1)) S_{b-1} ],   M_ij = λ^(i-j) for i ≥ j else 0
        S_b = λ^C S_{b-1} + (K_b ⊙ λ^(C-1-i))ᵀ V_b
    Equal to ``naive_recurrent_lightning``; T need not be a multiple of ``chunk_size``.
    Returns (o [B, T, H, V], final state [B, H, K, V] or None)."""
    _, T, _, K, _ = check_inputs(q, k, v, g, initial_state)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    scale = K**-0.5 if scale is None else scale
    q_BHTK, k_BHTK, v_BHTV, g_H, S_BHKV = _upcast(q, k, v, g, initial_state)
    outputs = []
    for start in range(0, T, chunk_size):
        C = min(chunk_size, T - start)
        q_BHCK = q_BHTK[:, :, start : start + C] * scale
        k_BHCK = k_BHTK[:, :, start : start + C]
        v_BHCV = v_BHTV[:, :, start : start + C]
        i_C = torch.arange(C, device=q.device, dtype=g_H.dtype)
        q_decay_HC = torch.exp(g_H[:, None] * (i_C + 1))
        k_decay_HC = torch.exp(g_H[:, None] * (C - 1 - i_C))
        # Exponent -inf above the diagonal gives M_ij = 0 there without ever evaluating exp of a
        # positive number (which overflows for fast-decaying heads).
        diff_CC = i_C[:, None] - i_C[None, :]
        exponent_HCC = torch.where(diff_CC >= 0, g_H[:, None, None] * diff_CC, float("-inf"))
        M_HCC = exponent_HCC.exp()
        intra_BHCV = ((q_BHCK @ k_BHCK.transpose(-1, -2)) * M_HCC) @ v_BHCV
        inter_BHCV = (q_BHCK * q_decay_HC[..., None]) @ S_BHKV
        outputs.append(intra_BHCV + inter_BHCV)
        S_BHKV = (
            torch.exp(g_H * C)[:, None, None] * S_BHKV + (k_BHCK * k_decay_HC[..., None]).transpose(-1, -2) @ v_BHCV
        )
    o_BTHV = torch.cat(outputs, dim=2).transpose(1, 2).to(q.dtype)
    return o_BTHV, (S_BHKV if output_final_state else None)
