"""Step 3c of the migration (METHODS §3.1-3.2): TransMLA-style conversion of the GQA softmax layers (QK-Norm
already fused by step 3a, so q, k, v are linear in x) into the hybrid's MLA layers.

A GQA layer scores query head h against key/value head g(h) = h // (H/G), splitting each head into the first
R = rotary_dim dims (rotate-half RoPE: frequency i pairs dims (i, i + R/2)) and P = K - R pass-through dims:

    score_h(t, s) = [ Σ_i rot_t(q_h,i) · rot_s(k_g,i)  +  q_h,pass · k_g,pass ] / sqrt(K)

The MLA layer has one shared rope key of Kr dims (interleaved RoPE: frequency i pairs dims (2i, 2i+1)) and
per-head nope keys and values expanded from a latent of kv_lora_rank dims. The conversion:

  1. RoRoPE (rope part, Kr = R). For each frequency i, the G key pairs (k_g,i) are rotated by the same angle,
     so an orthogonal mix U_i over heads, applied alike to the real and imaginary channels, commutes with RoPE.
     U_i = PCA over calibration keys of C_i = Σ_t (re_t re_tᵀ + im_t im_tᵀ) (G × G); its top component u_i is
     the shared key:  k_r,i = Σ_g u_i[g] k_g,i,  and head h's query becomes u_i[g(h)] q_h,i. Exact when G = 1 or
     when the keys of frequency i are rank one across heads. The residual k_g,i - u_i[g] k_r,i of the weaker
     components is, as in TransMLA, moved unrotated into the nope part where spare nope dims exist
     (qk_nope_head_dim > P: the Ling-2.6 and small_gpu shapes), slowest frequencies first, since they rotate
     least over a context (approximate: their relative rotation is lost); the remainder is DROPPED (all of it at
     the toy shapes, where qk_nope_head_dim = P). The rotate-half -> interleaved layout change is a row
     permutation (interleaved row 2i <- rotate-half row i, row 2i + 1 <- row i + R/2), exact.
  2. nope + V. Nope keys of the G groups (P pass-through dims + the carried residuals, N_k per group) and values
     (G·K dims): BKV scales the keys by 1/sqrt(α), α = E‖k_nope‖² / E‖v‖², then joint PCA of [k_nope / sqrt(α); v]
     over calibration activations keeps the top kv_lora_rank directions R_KV: kv_a rows = R_KVᵀ [W_k,nope /
     sqrt(α); W_v], and per head h W_UK,h = sqrt(α) R_KV[k rows of g(h)], W_UV,h = R_KV[v rows of g(h)]. Exact
     when kv_lora_rank >= G·(N_k + K). Nope dims past N_k get zero rows on both sides.
  3. Queries: [q_pass ; carried q rows (zero-padded to qk_nope_head_dim) ; permuted, u-weighted q_rope], times
     sqrt((Kn + Kr) / K) so MLA's 1/sqrt(Kn + Kr) score scale gives the GQA scale. With q_lora_rank, a rank-Rq
     factorisation q_b · q_a: the top Rq principal directions of the calibration queries (``q_basis=
     "activations"``, the truncated SVD of the query activations) or of the weight itself (``"weights"``).
  4. The inserted RMSNorms (kv_a_layernorm, q_a_layernorm) get γ = the least-squares scalar making
     γ · c / rms(c) ≈ c over the calibration latents (≈ the mean per-token RMS), so they are identity for an
     average token. They are the one non-linear change: a token whose latent RMS differs from the average has
     its nope keys and values (or queries) rescaled. Not exact even when every rank is lossless.
  5. ``dense`` (H·K -> D) is copied: v_head_dim must equal head_dim.

Shape legend: see ``model/layers.py`` and ``model/mla.py``; N calibration tokens, f = R/2 rope frequencies,
M a row count, n carried frequencies.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from model.mla import MultiLatentAttention

from .calibration import AttentionInputs, Batch, collect_attention_inputs
from .interim import InterimGQAAttention, check_migration_config, interim_layers

QBasis = Literal["activations", "weights"]


@dataclass
class MLALayerStats:
    """How much of one layer the conversion kept (fractions of calibration energy) and its measured error."""

    rope_energy_kept: float  # rope key energy kept rotated in the shared key (top RoRoPE component per frequency)
    rope_energy_carried: float  # rope key energy carried unrotated in spare nope dims (the rest is dropped)
    kv_energy_kept: float  # latent: top kv_lora_rank / all balanced [k_pass; v] directions
    q_energy_kept: float  # query low rank (1.0 without q_lora_rank)
    bkv_alpha: float  # E‖k_pass‖² / E‖v‖²
    kv_norm_gamma: float
    q_norm_gamma: float | None
    attn_rel_err: float  # ‖MLA(x) - GQA(x)‖ / ‖GQA(x)‖ on the first calibration batch


def top_eigenvectors(cov: torch.Tensor, rank: int) -> tuple[torch.Tensor, float]:
    """The ``rank`` leading eigenvectors [n, rank] of a PSD matrix (zero columns past n) and their energy share."""
    values, vectors = torch.linalg.eigh(cov)
    values, vectors = values.flip(0).clamp(min=0), vectors.flip(1)
    kept = min(rank, cov.shape[0])
    out = torch.zeros(cov.shape[0], rank, dtype=cov.dtype)
    out[:, :kept] = vectors[:, :kept]
    total = values.sum().item()
    return out, (values[:kept].sum().item() / total if total > 0 else 1.0)


def calibrated_norm_gamma(c_NC: torch.Tensor, eps: float) -> float:
    """argmin_γ Σ_t ‖γ c_t / ρ_t - c_t‖², ρ_t = sqrt(mean(c_t²) + eps): the scalar that makes an RMSNorm with
    weight γ closest to the identity on these latents (≈ mean_t ρ_t)."""
    energy_N = c_NC.pow(2).sum(-1)
    rho_N = (c_NC.pow(2).mean(-1) + eps).sqrt()
    return ((energy_N / rho_N).sum() / (energy_N / rho_N.pow(2)).sum()).item()


def interleave_order(rotary_dim: int) -> torch.Tensor:
    """Row order taking rotate-half rope dims (re_0..re_f-1, im_0..im_f-1) to interleaved (re_0, im_0, ...)."""
    half = rotary_dim // 2
    return torch.stack((torch.arange(half), torch.arange(half) + half), dim=-1).flatten()


def rorope(
    wq_HKD: torch.Tensor, wk_GKD: torch.Tensor, sigma_DD: torch.Tensor, rotary_dim: int, num_carried: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, tuple[float, float]]:
    """RoRoPE on the rope rows of fp64 query [H, K, D] and key [G, K, D] weights (rotate-half layout).

    Returns the shared rope key rows [R, D] and the per-head query rope rows [H, R, D] (interleaved layout),
    the residual key rows [G, 2n, D] of the ``num_carried`` = n lowest frequencies and their query rows
    [H, 2n, D] (real parts, then imaginary parts: dot products taken without rotation), and the shares of the
    calibration rope key energy (kept rotated in the shared key, carried unrotated)."""
    H, G = wq_HKD.shape[0], wk_GKD.shape[0]
    f = rotary_dim // 2
    group_of_head = torch.arange(H) // (H // G)
    re_GfD, im_GfD = wk_GKD[:, :f], wk_GKD[:, f:rotary_dim]
    u_fG = torch.empty(f, G, dtype=torch.float64)
    kept_f, total_f = torch.zeros(f, dtype=torch.float64), torch.zeros(f, dtype=torch.float64)
    for i in range(f):
        cov_GG = re_GfD[:, i] @ sigma_DD @ re_GfD[:, i].T + im_GfD[:, i] @ sigma_DD @ im_GfD[:, i].T
        u_fG[i] = top_eigenvectors(cov_GG, 1)[0][:, 0]
        kept_f[i], total_f[i] = u_fG[i] @ cov_GG @ u_fG[i], cov_GG.trace()
    shared_re_fD = torch.einsum("fg,gfd->fd", u_fG, re_GfD)
    shared_im_fD = torch.einsum("fg,gfd->fd", u_fG, im_GfD)
    order = interleave_order(rotary_dim)
    k_rope_RD = torch.cat((shared_re_fD, shared_im_fD))[order]
    u_Hf = u_fG[:, group_of_head].T[..., None]
    q_rope_HRD = torch.cat((wq_HKD[:, :f] * u_Hf, wq_HKD[:, f:rotary_dim] * u_Hf), dim=1)[:, order]

    # Residual of head g: k_g - u[g] · shared; the slowest frequencies rotate least over a context.
    carried = torch.arange(f - num_carried, f)
    res_re_GnD = re_GfD[:, carried] - u_fG[carried].T[..., None] * shared_re_fD[carried]
    res_im_GnD = im_GfD[:, carried] - u_fG[carried].T[..., None] * shared_im_fD[carried]
    res_k_GMD = torch.cat((res_re_GnD, res_im_GnD), dim=1)
    res_q_HMD = torch.cat((wq_HKD[:, carried], wq_HKD[:, f + carried]), dim=1)
    total = total_f.sum().item()
    shares = (
        (kept_f.sum().item() / total, (total_f - kept_f)[carried].sum().item() / total) if total > 0 else (1.0, 0.0)
    )
    return k_rope_RD, q_rope_HRD, res_k_GMD, res_q_HMD, shares


def transmla_state_dict(
    attention: InterimGQAAttention, x_ND: torch.Tensor, config, q_basis: QBasis = "activations"
) -> tuple[dict[str, torch.Tensor], MLALayerStats]:
    """MLA weights (``MultiLatentAttention`` state dict, fp64 on CPU) converted from a QK-Norm-free GQA layer with
    calibration inputs ``x_ND``; ``attn_rel_err`` of the returned stats is left NaN (``mla_from_gqa`` fills it)."""
    check_migration_config(config)
    if attention.use_qk_norm:
        raise ValueError(f"layer {attention.layer_idx} still has QK-Norm: fuse it first (fuse_qk_norm, step 3a)")
    if q_basis not in ("activations", "weights"):
        raise ValueError(f"q_basis must be 'activations' or 'weights', got {q_basis!r}")
    H, G, K = attention.num_heads, attention.num_kv_heads, attention.head_dim
    R, P = config.rotary_dim, config.head_dim - config.rotary_dim
    Kn, Kr, Kv, Rc, Rq = (
        config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim, config.kv_lora_rank, config.q_lora_rank
    )  # fmt: skip
    if Kv != K or Kn < P:
        raise ValueError(f"need v_head_dim == head_dim ({Kv} vs {K}) and qk_nope_head_dim >= {P} (got {Kn})")
    eps = config.rms_norm_eps
    w = attention.query_key_value.weight.detach().double().cpu()
    D = w.shape[1]
    wq_HKD, wk_GKD, wv_GKD = w.view(H + 2 * G, K, D).split([H, G, G])
    x_ND = x_ND.double()
    sigma_DD = x_ND.T @ x_ND / x_ND.shape[0]
    group_of_head = torch.arange(H) // (H // G)

    def energy(rows_MD: torch.Tensor) -> torch.Tensor:
        return rows_MD @ sigma_DD @ rows_MD.T

    # 1. RoRoPE; with a single kv head nothing is left over to carry.
    num_carried = min(R // 2, (Kn - P) // 2) if G > 1 else 0
    k_rope_RD, q_rope_HRD, res_k_GMD, res_q_HMD, (rope_kept, rope_carried) = rorope(
        wq_HKD, wk_GKD, sigma_DD, R, num_carried
    )

    # 2. nope keys (pass-through dims, then carried residuals) + V: balanced joint PCA into the latent.
    k_nope_GND = torch.cat((wk_GKD[:, R:], res_k_GMD), dim=1)
    Nk = k_nope_GND.shape[1]
    k_nope_MD, v_MD = k_nope_GND.reshape(G * Nk, D), wv_GKD.reshape(G * K, D)
    k_energy, v_energy = (energy(k_nope_MD).trace().item() if Nk else 0.0), energy(v_MD).trace().item()
    alpha = k_energy / v_energy if k_energy > 0 and v_energy > 0 else 1.0
    root_alpha = math.sqrt(alpha)
    z_MD = torch.cat((k_nope_MD / root_alpha, v_MD))
    r_kv_MC, kv_energy_kept = top_eigenvectors(energy(z_MD), Rc)
    latent_CD = r_kv_MC.T @ z_MD
    w_uk_HNC = torch.zeros(H, Kn, Rc, dtype=torch.float64)
    w_uk_HNC[:, :Nk] = (r_kv_MC[: G * Nk].view(G, Nk, Rc) * root_alpha)[group_of_head]
    w_uv_HVC = r_kv_MC[G * Nk :].view(G, K, Rc)[group_of_head]
    kv_b = torch.cat((w_uk_HNC, w_uv_HVC), dim=1).reshape(H * (Kn + Kv), Rc)
    kv_gamma = calibrated_norm_gamma(x_ND @ latent_CD.T, eps)

    # 3. Queries, rescaled from 1/sqrt(K) to MLA's 1/sqrt(Kn + Kr).
    q_nope_HND = torch.zeros(H, Kn, D, dtype=torch.float64)
    q_nope_HND[:, :Nk] = torch.cat((wq_HKD[:, R:], res_q_HMD), dim=1)
    wq_MD = torch.cat((q_nope_HND, q_rope_HRD), dim=1).reshape(H * (Kn + Kr), D) * math.sqrt((Kn + Kr) / K)
    state = {
        "kv_a_proj_with_mqa.weight": torch.cat((latent_CD, k_rope_RD)),
        "kv_a_layernorm.weight": torch.full((Rc,), kv_gamma, dtype=torch.float64),
        "kv_b_proj.weight": kv_b,
        "dense.weight": attention.dense.weight.detach().double().cpu(),
    }
    q_energy_kept, q_gamma = 1.0, None
    if Rq is None:
        state["q_proj.weight"] = wq_MD
    else:
        cov_q = energy(wq_MD)
        if q_basis == "activations":
            basis_MQ = top_eigenvectors(cov_q, Rq)[0]
        else:
            left = torch.linalg.svd(wq_MD, full_matrices=False)[0][:, :Rq]
            basis_MQ = torch.zeros(wq_MD.shape[0], Rq, dtype=torch.float64)
            basis_MQ[:, : left.shape[1]] = left
        q_energy_kept = ((basis_MQ.T @ cov_q @ basis_MQ).trace() / cov_q.trace()).item()
        q_a_QD = basis_MQ.T @ wq_MD
        q_gamma = calibrated_norm_gamma(x_ND @ q_a_QD.T, eps)
        state |= {
            "q_a_proj.weight": q_a_QD,
            "q_a_layernorm.weight": torch.full((Rq,), q_gamma, dtype=torch.float64),
            "q_b_proj.weight": basis_MQ,
        }
    stats = MLALayerStats(
        rope_energy_kept=rope_kept, rope_energy_carried=rope_carried, kv_energy_kept=kv_energy_kept,
        q_energy_kept=q_energy_kept, bkv_alpha=alpha, kv_norm_gamma=kv_gamma, q_norm_gamma=q_gamma,
        attn_rel_err=float("nan"),
    )  # fmt: skip
    return state, stats


@torch.no_grad()
def mla_from_gqa(
    attention: InterimGQAAttention, inputs: AttentionInputs, config, q_basis: QBasis = "activations"
) -> tuple[MultiLatentAttention, MLALayerStats]:
    """A ``MultiLatentAttention`` converted from ``attention``, on its device and dtype, and its stats with the
    relative output error measured on the first calibration batch."""
    state, stats = transmla_state_dict(attention, inputs.x_ND, config, q_basis)
    reference = attention.query_key_value.weight
    mla = MultiLatentAttention(config, attention.layer_idx).to(device=reference.device, dtype=reference.dtype)
    mla.load_state_dict({k: v.to(reference) for k, v in state.items()}, strict=True)
    mla.train(attention.training)
    x_BTD, cos_BTR, sin_BTR, bias_B1TS = inputs.sample_call
    want = attention(x_BTD, cos_BTR, sin_BTR, bias_B1TS, None).double()
    got = mla(x_BTD, cos_BTR, sin_BTR, bias_B1TS, None).double()
    stats.attn_rel_err = ((got - want).norm() / want.norm().clamp(min=1e-30)).item()
    return mla, stats


@torch.no_grad()
def convert_to_mla(
    model: nn.Module,
    calibration_batches: Iterable[Batch],
    *,
    q_basis: QBasis = "activations",
    inplace: bool = False,
) -> tuple[nn.Module, dict[int, MLALayerStats]]:
    """Step 3c on every GQA softmax layer of a QK-Norm-fused intermediate hybrid (``fuse_qk_norm``): the result
    has exactly the modules of ``HybridForCausalLM(config)``. Returns it (a copy unless ``inplace``) and the
    per-layer stats. All layers are calibrated from one pass of the unconverted model."""
    converted = model if inplace else copy.deepcopy(model)
    layers = interim_layers(converted)
    if not layers:
        raise ValueError("no GQA softmax layer to convert (run gqa_to_hybrid and fuse_qk_norm first)")
    unfused = sorted(i for i, attention in layers.items() if attention.use_qk_norm)
    if unfused:
        raise ValueError(f"layers {unfused} still have QK-Norm: fuse it first (fuse_qk_norm, step 3a)")
    inputs = collect_attention_inputs(converted, calibration_batches, sorted(layers))
    report = {}
    for i, attention in layers.items():
        mla, report[i] = mla_from_gqa(attention, inputs[i], converted.config, q_basis)
        converted.model.layers[i].attention = mla
    return converted, report
