"""Input checks shared by every Lightning attention implementation.

Shape legend: B batch, T sequence length, H heads, K query/key head dim, V value head dim.
"""

from __future__ import annotations

import torch


def check_inputs(
    q: torch.Tensor,  # [B, T, H, K]
    k: torch.Tensor,  # [B, T, H, K]
    v: torch.Tensor,  # [B, T, H, V]
    g: torch.Tensor,  # [H]
    initial_state: torch.Tensor | None,  # [B, H, K, V]
) -> tuple[int, int, int, int, int]:
    """Validate the layout and return (B, T, H, K, V); raises ValueError naming the bad tensor."""
    if q.dim() != 4:
        raise ValueError(f"q must be [B, T, H, K], got shape {tuple(q.shape)}")
    B, T, H, K = q.shape
    if k.shape != q.shape:
        raise ValueError(f"k must match q {tuple(q.shape)}, got {tuple(k.shape)}")
    if v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must be [B, T, H, V] = [{B}, {T}, {H}, V], got {tuple(v.shape)}")
    V = v.shape[-1]
    if g.shape != (H,):
        raise ValueError(f"g must be a per-head log-decay of shape [{H}], got {tuple(g.shape)}")
    if initial_state is not None and initial_state.shape != (B, H, K, V):
        raise ValueError(f"initial_state must be [{B}, {H}, {K}, {V}], got {tuple(initial_state.shape)}")
    if T == 0:
        raise ValueError("sequence length T must be >= 1")
    return B, T, H, K, V
