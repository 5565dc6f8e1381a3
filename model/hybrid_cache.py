"""Decoding cache of the Ling-2.5/2.6 hybrid and its size, analytic and measured.

A Lightning layer keeps one fp32 state [B, H, K, K] whatever the context length; an MLA layer keeps its latent
[c ; k_r] per token, [B, S, Rc + Kr] in the model dtype. Nothing else is cached (no per-head keys or values),
which is what makes the hybrid cheap at long context:

    bytes per token = Σ_MLA (Rc + Kr)·bytes(dtype) + Σ_Lightning H·K·K·4 / context_len

Shape legend: see ``layers.py`` and ``mla.py``.
"""

from __future__ import annotations

import torch

from .append_buffer import AppendBuffer


class HybridCache:
    """Per-layer recurrent states (Lightning) and latents (MLA) of a batch, for the native generation engine.

    ``get_seq_length`` counts the tokens seen so far (the model advances it once per forward), so positions
    work for any layer mix; ``select_rows`` keeps the still-running rows of a batch.
    """

    def __init__(self) -> None:
        self.states: dict[int, torch.Tensor] = {}  # layer -> [B, H, K, K] fp32
        self.latents: dict[int, AppendBuffer] = {}  # layer -> [B, S, Rc + Kr]
        self.seen_tokens = 0

    def get_seq_length(self, layer_idx: int | None = None) -> int:
        return self.seen_tokens

    def advance(self, num_tokens: int) -> None:
        self.seen_tokens += num_tokens

    def get_state(self, layer_idx: int) -> torch.Tensor | None:
        return self.states.get(layer_idx)

    def set_state(self, layer_idx: int, state_BHKK: torch.Tensor) -> None:
        self.states[layer_idx] = state_BHKK.float()

    def get_latent_length(self, layer_idx: int) -> int:
        latent = self.latents.get(layer_idx)
        return 0 if latent is None else latent.length

    def update_latent(self, layer_idx: int, latent_BTL: torch.Tensor) -> torch.Tensor:
        """Append the new tokens' latent [c ; k_r] [B, T, Rc + Kr]; returns all of it so far, [B, S, Rc + Kr]."""
        buffer = self.latents.get(layer_idx)
        if buffer is None:
            buffer = self.latents[layer_idx] = AppendBuffer(latent_BTL, dim=1)
            return buffer.tensor
        return buffer.append(latent_BTL)

    def select_rows(self, rows: torch.Tensor) -> HybridCache:
        """Keep batch rows ``rows`` (a LongTensor of indices) of every layer, in place; returns self."""
        for layer_idx, state in self.states.items():
            self.states[layer_idx] = state.index_select(0, rows.to(state.device))
        for buffer in self.latents.values():
            buffer.select_rows(rows)
        return self

    def live_bytes(self) -> dict[str, int]:
        """Bytes held for the tokens seen: ``latent`` (MLA), ``state`` (Lightning), their ``total``, and
        ``allocated`` (the latents' spare capacity included)."""
        latent = sum(b.filled_bytes() for b in self.latents.values())
        state = sum(t.numel() * t.element_size() for t in self.states.values())
        allocated = sum(b.allocated_bytes() for b in self.latents.values()) + state
        return {"latent": latent, "state": state, "total": latent + state, "allocated": allocated}


def cache_bytes_per_token(
    model_or_config, context_len: int, latent_dtype: torch.dtype | None = None
) -> dict[str, float]:
    """Analytic cache bytes per token of one sequence of ``context_len`` tokens (MTP layers are never cached).

    ``latent`` = Σ over MLA layers of (kv_lora_rank + qk_rope_head_dim)·bytes(latent dtype); ``state`` = Σ over
    Lightning layers of the fp32 state H·K·K·4 bytes amortised over ``context_len``; ``total`` their sum. The
    latent dtype is ``latent_dtype``, else the model's parameter dtype, else (a bare config) bf16, the serving
    dtype. ``HybridCache.live_bytes()["total"] / (batch · context_len)`` measures the same number.
    """
    if context_len < 1:
        raise ValueError(f"context_len must be >= 1, got {context_len}")
    config = getattr(model_or_config, "config", model_or_config)
    if latent_dtype is None:
        parameters = getattr(model_or_config, "parameters", None)
        latent_dtype = next(parameters()).dtype if parameters is not None else torch.bfloat16
    latent_bytes = torch.empty((), dtype=latent_dtype).element_size()
    layer_types = list(config.layer_types)
    num_mla = layer_types.count("full_attention")
    num_lightning = layer_types.count("linear_attention")
    latent = num_mla * (config.kv_lora_rank + config.qk_rope_head_dim) * latent_bytes
    state = num_lightning * config.num_attention_heads * config.head_dim**2 * 4 / context_len
    return {"latent": float(latent), "state": state, "total": latent + state}
