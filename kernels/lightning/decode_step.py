"""One-token Lightning attention in torch: the CPU path of decoding.

    S = λ S_prev + kᵀ v ;  o = scale · q S           (λ_h = exp(g_h), one token, fp32 state)

The same function as ``naive_recurrent_lightning`` at T = 1, in a handful of batched ops (one broadcasting
``addcmul`` for the state update, a ``bmm`` for the read-out) instead of the reference's per-step broadcasts
and einsum: decoding at batch 1 is bound by how many ops run, not by their arithmetic (``baddbmm`` of the
K x 1 by 1 x V outer products was slower than ``addcmul`` in an ad-hoc timing on this CPU).

Shape legend: see ``naive.py``.
"""

from __future__ import annotations

import torch

from kernels.lightning.inputs import check_inputs


def lightning_decode_step(
    q: torch.Tensor,  # [B, 1, H, K]
    k: torch.Tensor,  # [B, 1, H, K]
    v: torch.Tensor,  # [B, 1, H, V]
    g: torch.Tensor,  # [H]
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,  # [B, H, K, V]
    output_final_state: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Returns (o [B, 1, H, V] in q's dtype, final state [B, H, K, V] in fp32 (fp64 if given) or None)."""
    B, T, H, K, V = check_inputs(q, k, v, g, initial_state)
    if T != 1:
        raise ValueError(f"lightning_decode_step takes one token, got T={T}; use the chunked form for more")
    scale = K**-0.5 if scale is None else scale
    dtype = torch.promote_types(q.dtype, torch.float32)
    k_NK1 = k.reshape(B * H, K, 1).to(dtype)  # N = B·H rows, one per (sequence, head)
    v_N1V = v.reshape(B * H, 1, V).to(dtype)
    if initial_state is None:
        S_NKV = k_NK1 * v_N1V
    else:
        decay_H11 = g.to(dtype).exp()[:, None, None]
        S_NKV = torch.addcmul((decay_H11 * initial_state.to(dtype)).reshape(B * H, K, V), k_NK1, v_N1V)
    o_N1V = torch.bmm(q.reshape(B * H, 1, K).to(dtype), S_NKV).mul_(scale)
    o_B1HV = o_N1V.view(B, 1, H, V).to(q.dtype)
    return o_B1HV, (S_NKV.view(B, H, K, V) if output_final_state else None)
