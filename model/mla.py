"""Multi-head latent attention (MLA) of the Ling-2.5/2.6 hybrid (official
``BailingMoeV2_5MultiLatentAttention``, DeepSeek-V2/V3 design), with a latent cache and an absorbed decode.

    q            = q_b_proj(q_a_layernorm(q_a_proj(x)))   (q_lora_rank; plain ``q_proj`` when it is None)
    [q_n ; q_r]  = q per head                             (Kn = qk_nope_head_dim, Kr = qk_rope_head_dim)
    [c ; k_r]    = kv_a_proj_with_mqa(x);  c = kv_a_layernorm(c)          (Rc = kv_lora_rank)
    [k_n ; v]    = kv_b_proj(c) per head                  (Kn + Kv per head; W_UK, W_UV below)
    q_r, k_r     = interleaved RoPE; k_r is one head shared by all heads
    out          = dense(softmax([q_n; q_r]·[k_n; k_r]ᵀ · (Kn + Kr)^-1/2) v)

The cache keeps only [c ; k_r] per token (Rc + Kr numbers per layer, ``HybridCache``). The absorbed path
never expands it into per-head keys and values: with kv_b_proj.weight viewed as [H, Kn + Kv, Rc] = [W_UK; W_UV],
    score_h(t, s) = (q_n,h W_UK,h) · c_s + q_r,h · k_r,s         (W_UK absorbed into the query)
    out_h(t)      = (Σ_s p_h(t, s) c_s) W_UV,hᵀ                   (W_UV applied after the weighted sum)
which is the same function as the naive path (tests check both, and parity with transformers' DeepSeek-V3).

Shape legend (with ``layers.py``): Rc kv_lora_rank, Rq q_lora_rank, Kn/Kr/Kv the nope/rope/value head dims,
S keys attended (cached + new), 1 the single shared latent "head".
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import RMSNorm, rope_scaling_value, rotate_half, yarn_mscale, yarn_params


def apply_interleaved_rotary(x_BHTR: torch.Tensor, cos_BTR: torch.Tensor, sin_BTR: torch.Tensor) -> torch.Tensor:
    """RoPE on interleaved pairs (x0, x1), (x2, x3), ... as the official MLA and DeepSeek-V3 apply it: the pairs
    are first regrouped into halves [x0, x2, ...; x1, x3, ...], then rotated rotate-half style. The output stays
    in the regrouped order, for queries and keys alike, so their dot products are those of interleaved RoPE."""
    B, H, T, R = x_BHTR.shape
    x_BHTR = x_BHTR.view(B, H, T, R // 2, 2).transpose(-1, -2).reshape(B, H, T, R)
    cos, sin = cos_BTR[:, None], sin_BTR[:, None]
    return x_BHTR * cos + rotate_half(x_BHTR) * sin


class MultiLatentAttention(nn.Module):
    """Official module names: ``q_proj`` or ``q_a_proj``/``q_a_layernorm``/``q_b_proj``, ``kv_a_proj_with_mqa``,
    ``kv_a_layernorm``, ``kv_b_proj``, ``dense``. ``absorb`` None picks the absorbed path exactly when earlier
    tokens are cached (decode), the naive one otherwise (training, prefill); True/False force one."""

    def __init__(self, config, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.num_heads = H = config.num_attention_heads
        self.nope_dim = config.qk_nope_head_dim
        self.rope_dim = config.qk_rope_head_dim
        self.v_dim = config.v_head_dim
        self.kv_lora_rank = config.kv_lora_rank
        self.q_lora_rank = config.q_lora_rank
        qk_dim = self.nope_dim + self.rope_dim
        D, eps, bias = config.hidden_size, config.rms_norm_eps, config.use_qkv_bias
        if self.q_lora_rank is None:
            self.q_proj = nn.Linear(D, H * qk_dim, bias=False)
        else:
            self.q_a_proj = nn.Linear(D, self.q_lora_rank, bias=bias)
            self.q_a_layernorm = RMSNorm(self.q_lora_rank, eps)
            self.q_b_proj = nn.Linear(self.q_lora_rank, H * qk_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(D, self.kv_lora_rank + self.rope_dim, bias=bias)
        self.kv_a_layernorm = RMSNorm(self.kv_lora_rank, eps)
        self.kv_b_proj = nn.Linear(self.kv_lora_rank, H * (self.nope_dim + self.v_dim), bias=False)
        self.dense = nn.Linear(H * self.v_dim, D, bias=bias)
        self.set_rope_scaling(getattr(config, "rope_scaling", None))

    def set_rope_scaling(self, scaling) -> None:
        """Softmax scale (Kn + Kr)^-1/2, times YaRN's temperature mscale(s, mscale_all_dim)² when ``scaling`` is
        set: on every dim, as DeepSeek-V3 applies it, since the nope dims see the longer context too."""
        mscale, scaling = 1.0, yarn_params(scaling)
        if scaling is not None:
            factor = rope_scaling_value(scaling, "factor")
            mscale = yarn_mscale(factor, rope_scaling_value(scaling, "mscale_all_dim", 1.0))
        self.scale = (self.nope_dim + self.rope_dim) ** -0.5 * mscale**2

    def project(
        self, x_BTD: torch.Tensor, cos_BTR: torch.Tensor, sin_BTR: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The new tokens' queries, rotated, and their latents: (q_nope [B, H, T, Kn], q_rope [B, H, T, Kr],
        latent [B, T, L]), L = Rc + Kr, the joint key of the absorbed path and what the cache stores."""
        B, T, _ = x_BTD.shape
        q = self.q_proj(x_BTD) if self.q_lora_rank is None else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x_BTD)))
        q_BHTK = q.view(B, T, self.num_heads, -1).transpose(1, 2)
        q_nope_BHTN, q_rope_BHTR = q_BHTK.split([self.nope_dim, self.rope_dim], dim=-1)
        c_BTC, k_rope_BTR = self.kv_a_proj_with_mqa(x_BTD).split([self.kv_lora_rank, self.rope_dim], dim=-1)
        c_BTC = self.kv_a_layernorm(c_BTC)
        q_rope_BHTR = apply_interleaved_rotary(q_rope_BHTR, cos_BTR, sin_BTR)
        k_rope_BTR = apply_interleaved_rotary(k_rope_BTR[:, None], cos_BTR, sin_BTR)[:, 0]
        return q_nope_BHTN, q_rope_BHTR, torch.cat((c_BTC, k_rope_BTR), dim=-1)

    def forward(
        self,
        x_BTD: torch.Tensor,
        cos_BTR: torch.Tensor,
        sin_BTR: torch.Tensor,
        bias_B1TS: torch.Tensor | None,
        cache,
        absorb: bool | None = None,
    ) -> torch.Tensor:
        B, T, _ = x_BTD.shape
        q_nope_BHTN, q_rope_BHTR, latent_BSL = self.project(x_BTD, cos_BTR, sin_BTR)
        num_past = 0
        if cache is not None:
            num_past = cache.get_latent_length(self.layer_idx)
            latent_BSL = cache.update_latent(self.layer_idx, latent_BSL)  # now all S tokens
        causal = bias_B1TS is None and T > 1
        if absorb is None:
            absorb = num_past > 0
        attend = self._absorbed if absorb else self._naive
        y_BHTV = attend(q_nope_BHTN, q_rope_BHTR, latent_BSL, bias_B1TS, causal)
        return self.dense(y_BHTV.transpose(1, 2).reshape(B, T, self.num_heads * self.v_dim))

    def _naive(self, q_nope_BHTN, q_rope_BHTR, latent_BSL, bias_B1TS, causal) -> torch.Tensor:
        """Expand the latent into per-head keys and values, then plain softmax attention."""
        c_BSC, k_rope_BSR = latent_BSL.split([self.kv_lora_rank, self.rope_dim], dim=-1)
        B, S, _ = c_BSC.shape
        kv_BHSK = self.kv_b_proj(c_BSC).view(B, S, self.num_heads, -1).transpose(1, 2)
        k_nope_BHSN, v_BHSV = kv_BHSK.split([self.nope_dim, self.v_dim], dim=-1)
        k_rope_BHSR = k_rope_BSR[:, None].expand(-1, self.num_heads, -1, -1)
        q_BHTK = torch.cat((q_nope_BHTN, q_rope_BHTR), dim=-1)
        k_BHSK = torch.cat((k_nope_BHSN, k_rope_BHSR), dim=-1)
        # SDPA's fused CPU kernel needs one head dim for q, k and v; otherwise it falls back to the math path,
        # which materialises [B, H, T, S] scores (4 GB at 16K context). Zero value dims change nothing.
        qk_dim = q_BHTK.shape[-1]
        if self.v_dim < qk_dim:
            v_BHSV = F.pad(v_BHSV, (0, qk_dim - self.v_dim))
        y_BHTK = F.scaled_dot_product_attention(
            q_BHTK, k_BHSK, v_BHSV, attn_mask=bias_B1TS, is_causal=causal, scale=self.scale
        )
        return y_BHTK[..., : self.v_dim]

    def _absorbed(self, q_nope_BHTN, q_rope_BHTR, latent_BSL, bias_B1TS, causal) -> torch.Tensor:
        """Attend over the latent itself: one shared key [c; k_r] and value c for all heads (MQA over Rc + Kr
        dims), with W_UK folded into the query and W_UV applied to the attended latent.

        All H·T query rows go to SDPA as one head over one shared key/value head, the stored latent itself
        (as the value too: the context's first Rc dims are the weighted sum of c, the rest is dropped). The
        latent is then read once, in SDPA's fused kernel, with no per-head broadcast and no per-step copy.
        """
        B, H, T, _ = q_nope_BHTN.shape
        S = latent_BSL.shape[1]
        w_HKC = self.kv_b_proj.weight.view(H, self.nope_dim + self.v_dim, self.kv_lora_rank)
        w_uk_HNC, w_uv_HVC = w_HKC.split([self.nope_dim, self.v_dim], dim=1)
        q_latent_BHTC = q_nope_BHTN @ w_uk_HNC  # broadcast over B; matmul dispatches cheaper than einsum
        q_B1ML = torch.cat((q_latent_BHTC, q_rope_BHTR), dim=-1).reshape(B, 1, H * T, -1)  # M = H·T rows
        mask = bias_B1TS
        if mask is None and causal:
            mask = torch.ones(1, 1, T, S, dtype=torch.bool, device=latent_BSL.device).tril(S - T)
        if mask is not None and T > 1:
            mask = mask.expand(-1, -1, T, S)[:, :, None].expand(-1, -1, H, T, S).reshape(-1, 1, H * T, S)
        kv_B1SL = latent_BSL[:, None]
        ctx_B1ML = F.scaled_dot_product_attention(q_B1ML, kv_B1SL, kv_B1SL, attn_mask=mask, scale=self.scale)
        ctx_BHTC = ctx_B1ML[..., : self.kv_lora_rank].reshape(B, H, T, self.kv_lora_rank)
        return ctx_BHTC @ w_uv_HVC.transpose(1, 2)
