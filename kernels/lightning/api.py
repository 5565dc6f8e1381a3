"""``lightning_attn``: the one entry point the model calls; picks the algorithm form and the backend.

Shape legend: B batch, T sequence length, H heads, K query/key head dim, V value head dim.
"""

from __future__ import annotations

from typing import Literal

import torch

from kernels.dispatch import use_triton
from kernels.lightning.chunk import DEFAULT_CHUNK_SIZE, chunk_lightning_attn
from kernels.lightning.decode_step import lightning_decode_step
from kernels.lightning.fused_recurrent import fused_recurrent_lightning_attn
from kernels.lightning.naive import naive_chunk_lightning, naive_recurrent_lightning

Mode = Literal["auto", "chunk", "fused_recurrent"]

# HF's BailingMoeV2_5 switches to the recurrent kernel at or below this many query tokens.
RECURRENT_MAX_LEN = 64


def lightning_attn(
    q: torch.Tensor,  # [B, T, H, K]
    k: torch.Tensor,  # [B, T, H, K]
    v: torch.Tensor,  # [B, T, H, V]
    g: torch.Tensor,  # [H]
    *,
    scale: float | None = None,
    initial_state: torch.Tensor | None = None,  # [B, H, K, V]
    output_final_state: bool = False,
    mode: Mode = "auto",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Lightning attention (METHODS.md §2.2). Returns (o [B, T, H, V], final state [B, H, K, V] fp32 or None).

    ``mode`` picks the algorithm: "chunk" (training, prefill), "fused_recurrent" (decode), or "auto",
    which on Triton takes the recurrent form for T <= 64 like HF. ``kernels.dispatch.use_triton`` picks
    the backend; the torch fallback runs the naive reference of the same form, except that "auto" there
    takes the recurrent form only for one-token decode (its Python loop runs T times, the chunk form's
    T / chunk_size times), and runs that token through ``lightning_decode_step``: the same function in a
    handful of batched ops.
    """
    if mode not in ("auto", "chunk", "fused_recurrent"):
        raise ValueError(f"mode must be 'auto', 'chunk' or 'fused_recurrent', got {mode!r}")
    triton_path = use_triton(q)
    if mode == "auto":
        recurrent_max_len = RECURRENT_MAX_LEN if triton_path else 1
        mode = "fused_recurrent" if q.shape[1] <= recurrent_max_len else "chunk"
    kwargs = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state)
    if mode == "chunk":
        chunk = chunk_lightning_attn if triton_path else naive_chunk_lightning
        return chunk(q, k, v, g, chunk_size=chunk_size, **kwargs)
    if triton_path:
        return fused_recurrent_lightning_attn(q, k, v, g, **kwargs)
    recurrent = lightning_decode_step if q.shape[1] == 1 else naive_recurrent_lightning
    return recurrent(q, k, v, g, **kwargs)
