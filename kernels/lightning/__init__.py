"""Lightning attention (METHODS.md §2.2): a decayed linear attention, S_t = λ S_{t-1} + k_tᵀ v_t,
o_t = scale · q_t S_t, with a fixed per-head λ = exp(g)."""

from kernels.lightning.api import lightning_attn
from kernels.lightning.chunk import chunk_lightning_attn
from kernels.lightning.decay import lightning_log_decay, lightning_slopes
from kernels.lightning.fused_recurrent import fused_recurrent_lightning_attn
from kernels.lightning.naive import naive_chunk_lightning, naive_recurrent_lightning

__all__ = [
    "chunk_lightning_attn",
    "fused_recurrent_lightning_attn",
    "lightning_attn",
    "lightning_log_decay",
    "lightning_slopes",
    "naive_chunk_lightning",
    "naive_recurrent_lightning",
]
