"""Lightning attention layer of the Ling-2.5/2.6 hybrid (official ``BailingMoeV2_5LinearAttention``).

    qkv   = query_key_value(x)                  D -> 3·H·K (MHA: as many key/value heads as query heads)
    qkv   = silu(qkv)                           only if ``linear_silu``
    q, k  = PartialRoPE(RMSNorm_K(q), RMSNorm_K(k))      same rotate-half RoPE as the GQA base
    o     = LightningAttn(q, k, v; g_h)         S_t = exp(g_h) S_{t-1} + k_tᵀ v_t ;  o_t = K^-1/2 · q_t S_t
    o     = g_norm(o) ⊙ sigmoid(g_proj(x))      GroupRMSNorm over H·K in ``group_norm_size`` groups
    out   = dense(o)                            H·K -> D

g_h is a fixed per-head, per-layer log-decay (ALiBi slopes scaled by depth, ``lightning_log_decay``); the
recurrent state S [B, H, K, K] is kept in fp32. Padded positions (mask 0) get v = 0, so they add nothing to
the state and a left-padded row equals its unpadded sequence (the official code zeroes v the same way).

Where the attention math runs: this file ships inside exported checkpoints, where the repository's
``kernels`` package does not exist, so it carries its own pure-torch chunked implementation
(``torch_lightning_attn``). When the project's ``kernels`` package is importable, ``lightning_attention``
hands the call to its ``lightning_attn`` instead, which picks Triton on CUDA (``kernels.dispatch`` is the one
device decision). Both compute the same function; tests check that they agree.

Shape legend (with ``layers.py``): B batch, T new tokens, H heads, K head dim (keys and values), C chunk.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .layers import RMSNorm, qk_norm_rotary, rms_normalize

DecayRule = Literal["official", "vllm"]
Backend = Literal["auto", "torch", "kernels"]
DEFAULT_CHUNK_SIZE = 64


def alibi_slopes(num_heads: int) -> list[float]:
    """ALiBi slopes: start^(h+1) with start = 2^(-8/H); other head counts interleave the next power of two."""
    if math.log2(num_heads).is_integer():
        start = 2.0 ** (-8.0 / num_heads)
        return [start ** (h + 1) for h in range(num_heads)]
    closest = 2 ** math.floor(math.log2(num_heads))
    return alibi_slopes(closest) + alibi_slopes(2 * closest)[0::2][: num_heads - closest]


def lightning_log_decay(num_heads: int, layer_idx: int, num_layers: int, rule: DecayRule = "official") -> list[float]:
    """Per-head log-decay g_h (negative) of 0-based layer ``layer_idx`` out of ``num_layers``:

        official (HF BailingMoeV2_5LinearAttention): g_h = -slope_h · (1 - (ℓ-1)/(L-1) + 1e-5)
        vllm (vLLM's Bailing linear attention):      g_h = -slope_h · (1 - ℓ/(L-1) + 1e-5)

    The same numbers as ``kernels.lightning.decay.lightning_log_decay`` (kept here so that a checkpoint folder
    needs no repository code). Python floats: products in float64, rounded once when a tensor is built.
    """
    if rule not in ("official", "vllm"):
        raise ValueError(f"rule must be 'official' or 'vllm', got {rule!r}")
    offset = layer_idx - 1 if rule == "official" else layer_idx
    factor = 1.0 - (offset / (num_layers - 1) if num_layers > 1 else 0.0) + 1e-5
    return [-slope * factor for slope in alibi_slopes(num_heads)]


def torch_lightning_attn(
    q_BTHK: torch.Tensor,
    k_BTHK: torch.Tensor,
    v_BTHK: torch.Tensor,
    g_H: torch.Tensor,
    scale: float,
    initial_state: torch.Tensor | None = None,  # [B, H, K, K]
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked Lightning attention in fp32 (Lightning-Attention-2 intra/inter split), for chunk b, local i:

        O_b = scale · [ ((Q_b K_bᵀ) ⊙ M) V_b + (Q_b ⊙ λ^(i+1)) S_{b-1} ],   M_ij = λ^(i-j) for i ≥ j else 0
        S_b = λ^C S_{b-1} + (K_b ⊙ λ^(C-1-i))ᵀ V_b

    Equal to the recurrence S_t = λ S_{t-1} + k_tᵀ v_t, o_t = scale · q_t S_t for any T (one token is a chunk of
    one). Returns (o [B, T, H, K] in q's dtype, final state [B, H, K, K] fp32).
    """
    B, T, H, K = q_BTHK.shape
    q_BHTK, k_BHTK, v_BHTK = (x.transpose(1, 2).float() for x in (q_BTHK, k_BTHK, v_BTHK))
    g_H = g_H.float()
    S_BHKK = q_BHTK.new_zeros(B, H, K, v_BHTK.shape[-1]) if initial_state is None else initial_state.float()
    outputs = []
    for start in range(0, T, chunk_size):
        C = min(chunk_size, T - start)
        q_BHCK = q_BHTK[:, :, start : start + C] * scale
        k_BHCK = k_BHTK[:, :, start : start + C]
        v_BHCK = v_BHTK[:, :, start : start + C]
        i_C = torch.arange(C, device=q_BTHK.device, dtype=torch.float32)
        # exp of -inf above the diagonal: M is 0 there without evaluating exp of a positive number (overflow).
        diff_CC = i_C[:, None] - i_C[None, :]
        M_HCC = torch.where(diff_CC >= 0, g_H[:, None, None] * diff_CC, float("-inf")).exp()
        intra_BHCK = ((q_BHCK @ k_BHCK.transpose(-1, -2)) * M_HCC) @ v_BHCK
        inter_BHCK = (q_BHCK * torch.exp(g_H[:, None] * (i_C + 1))[..., None]) @ S_BHKK
        outputs.append(intra_BHCK + inter_BHCK)
        k_decayed_BHCK = k_BHCK * torch.exp(g_H[:, None] * (C - 1 - i_C))[..., None]
        S_BHKK = torch.exp(g_H * C)[:, None, None] * S_BHKK + k_decayed_BHCK.transpose(-1, -2) @ v_BHCK
    o_BTHK = torch.cat(outputs, dim=2).transpose(1, 2).to(q_BTHK.dtype)
    return o_BTHK, S_BHKK


def _project_kernel():
    """The project's dispatching ``kernels.lightning.lightning_attn``, or None outside the repository.

    Imported at call time: a checkpoint folder loaded with ``trust_remote_code`` has no ``kernels`` package. The
    ``KERNELS_PACKAGE`` marker rules out Hugging Face's unrelated distribution of the same name.
    """
    try:
        import kernels
        from kernels.lightning import lightning_attn
    except ImportError:
        return None
    return lightning_attn if getattr(kernels, "KERNELS_PACKAGE", None) == "ling26" else None


def lightning_attention(
    q_BTHK: torch.Tensor,
    k_BTHK: torch.Tensor,
    v_BTHK: torch.Tensor,
    g_H: torch.Tensor,
    *,
    scale: float,
    initial_state: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    backend: Backend = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lightning attention through the project's kernels when importable ("auto"), else in torch.

    ``backend`` "torch" or "kernels" forces one path (the latter fails outside the repository).
    Returns (o [B, T, H, K], final state [B, H, K, K] fp32).
    """
    if backend not in ("auto", "torch", "kernels"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'kernels', got {backend!r}")
    kernel = None if backend == "torch" else _project_kernel()
    if kernel is None:
        if backend == "kernels":
            raise ImportError("backend='kernels' needs this project's kernels package on the path")
        return torch_lightning_attn(q_BTHK, k_BTHK, v_BTHK, g_H, scale, initial_state, chunk_size)
    o_BTHK, S_BHKK = kernel(
        q_BTHK, k_BTHK, v_BTHK, g_H, scale=scale, initial_state=initial_state, output_final_state=True,
        chunk_size=chunk_size,
    )  # fmt: skip
    return o_BTHK, S_BHKK


class GroupRMSNorm(RMSNorm):
    """RMSNorm over each of ``groups`` equal slices of the last dim, one weight over the whole dim (``g_norm``)."""

    def __init__(self, dim: int, groups: int, eps: float) -> None:
        if dim % groups:
            raise ValueError(f"dim {dim} is not divisible by group_norm_size {groups}")
        super().__init__(dim, eps)
        self.groups = groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * rms_normalize(x.unflatten(-1, (self.groups, -1)), self.eps).flatten(-2)


class LightningAttention(nn.Module):
    """The linear-attention layer; official module names (``query_key_value``, ``query_layernorm``,
    ``key_layernorm``, ``g_proj``, ``g_norm``, ``dense``). The decay is not a parameter: ``decay_rule`` picks
    the official or the vLLM formula (``set_decay_rule``), and g is built from H Python floats on the device
    of the call (kept per device and rule, never a buffer), so a model built on the meta device or cast to bf16
    never holds a stale or rounded decay."""

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_layers = config.num_hidden_layers
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.linear_silu = config.linear_silu
        self.use_qk_norm = config.use_qk_norm
        # Not an official config key (it tunes the kernel, not the function): checkpoints fall back to 64.
        self.chunk_size = getattr(config, "lightning_chunk_size", DEFAULT_CHUNK_SIZE)
        self.backend: Backend = "auto"
        width = self.num_heads * self.head_dim
        self.query_key_value = nn.Linear(config.hidden_size, 3 * width, bias=config.use_qkv_bias)
        if config.use_qk_norm:
            self.query_layernorm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.key_layernorm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.g_proj = nn.Linear(config.hidden_size, width, bias=False)
        self.g_norm = GroupRMSNorm(width, config.group_norm_size, config.rms_norm_eps)
        self.dense = nn.Linear(width, config.hidden_size, bias=config.use_bias)
        self.set_decay_rule("official")

    def set_decay_rule(self, rule: DecayRule) -> None:
        self.decay_rule = rule
        self.log_decay = tuple(lightning_log_decay(self.num_heads, self.layer_idx, self.num_layers, rule))
        self._log_decay_tensor: torch.Tensor | None = None  # g on the device of the last call

    def forward(
        self,
        x_BTD: torch.Tensor,
        cos_BTR: torch.Tensor,
        sin_BTR: torch.Tensor,
        pad_mask_BT: torch.Tensor | None,
        cache,
    ) -> torch.Tensor:
        """``pad_mask_BT`` marks the real tokens among the T new ones (None: all real); ``cache`` is a
        ``HybridCache`` (or None) whose state for this layer is read and replaced."""
        B, T, _ = x_BTD.shape
        H = self.num_heads
        qkv = self.query_key_value(x_BTD)
        if self.linear_silu:
            qkv = F.silu(qkv)
        qkv_BTXK = qkv.view(B, T, 3 * H, self.head_dim)
        qk_norms = (self.query_layernorm, self.key_layernorm) if self.use_qk_norm else None
        qk_BXTK = qk_norm_rotary(qkv_BTXK[:, :, : 2 * H], qk_norms, H, cos_BTR, sin_BTR)
        q_BTHK, k_BTHK = qk_BXTK.transpose(1, 2).chunk(2, dim=2)
        v_BTHK = qkv_BTXK[:, :, 2 * H :]
        if pad_mask_BT is not None:
            v_BTHK = v_BTHK * pad_mask_BT[:, :, None, None].to(v_BTHK.dtype)
        state = cache.get_state(self.layer_idx) if cache is not None else None
        o_BTHK, state = lightning_attention(
            q_BTHK, k_BTHK, v_BTHK, self._log_decay_on(x_BTD.device), scale=self.head_dim**-0.5,
            initial_state=state, chunk_size=self.chunk_size, backend=self.backend,
        )  # fmt: skip
        if cache is not None:
            cache.set_state(self.layer_idx, state)
        o_BTW = self.g_norm(o_BTHK.reshape(B, T, -1)) * torch.sigmoid(self.g_proj(x_BTD))
        return self.dense(o_BTW)

    def _log_decay_on(self, device: torch.device) -> torch.Tensor:
        """g [H] fp32 on ``device``, built from the Python floats again only when the device or (through
        ``set_decay_rule``, which drops it) the rule changes."""
        if self._log_decay_tensor is None or self._log_decay_tensor.device != torch.device(device):
            self._log_decay_tensor = torch.tensor(self.log_decay, dtype=torch.float32, device=device)
        return self._log_decay_tensor
