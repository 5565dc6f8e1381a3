"""Training-inference mismatch corrections (METHODS §4) as pure functions of two policies' token log-probs.

Shape legend: B rows (responses), T response positions.

Both log-probs score the same sampled tokens at the *behaviour* weights: ``logp_train`` by the trainer
(π_train), ``logp_infer`` by the rollout engine (π_infer). With the mismatch ratio k_t = p_train / p_infer:

    none     w_t = 1
    icepop   w_t = k_t · 1[α ≤ k_t ≤ β]                                   (α, β) = (0.5, 5)
    kpop     w_t = k_t · 1[D_B(p_tr ‖ p_inf) ≤ φ] · 1[D_B(p_inf ‖ p_tr) ≤ φ]   direction "both"
             D_B(p ‖ q) = p log(p/q) + (1-p) log((1-p)/(1-q))  (binary KL of {sampled token, the rest});
             direction "train_infer" / "infer_train" keeps only the first / second test
    tis      w_t = min(k_t, C)                                            C = 2
    mis      w_t = ρ · 1[ρ_min ≤ ρ ≤ C] on every token of the row, ρ = Π_t k_t  (unit "sequence")
             or ρ = exp(mean_t log k_t)                                       (unit "geometric_mean")

``weighted=False`` turns icepop / kpop / mis into pure 0/1 masks (KPop's "variant B"); TIS is a weight by
definition. The returned weight is detached and 0 off the mask. KPop's accepted ratio band is wide for rare
tokens and tight for confident ones: |k - 1| ≲ sqrt(2φ(1-p)/p) for small mismatch (table in METHODS §4.2).

In decoupled PPO (``policy_gradient.decoupled_policy_loss``) the same functions correct the behaviour policy
toward the proximal one: pass π_prox as ``logp_train`` and π_behav as ``logp_infer``.

Statistics are taken on the raw values, over every model token whether or not the correction masks it:
masked fraction (overall and per p_infer bucket), mean |Δ log p|, the K3 estimate of KL(π_infer ‖ π_train)
per token, and the ratio's range.
"""

from __future__ import annotations

import itertools
import math
from typing import Literal

import torch

from configs.base import config

Method = Literal["none", "icepop", "kpop", "tis", "mis"]
Direction = Literal["both", "train_infer", "infer_train"]
MisUnit = Literal["sequence", "geometric_mean"]

# p_infer bucket edges for the per-bucket masked fraction: the rows of the KPop table (METHODS §4.2).
PROB_BUCKETS: tuple[float, ...] = (0.0, 1e-4, 1e-3, 1e-2, 0.1, 0.5, 0.9, 1.0)
# Keeps 1 - p and p away from 0 in the binary KL; far below any probability a token is sampled with.
_PROB_FLOOR = 1e-12


@config
class MismatchConfig:
    """One correction method and its knobs; the defaults are the papers' (METHODS §4)."""

    method: Method = "kpop"
    weighted: bool = True
    kpop_phi: float = 1e-3
    kpop_direction: Direction = "both"
    icepop_low: float = 0.5
    icepop_high: float = 5.0
    tis_cap: float = 2.0
    mis_cap: float = 2.0
    mis_min: float = 0.0
    mis_unit: MisUnit = "sequence"

    def __post_init__(self) -> None:
        if self.method not in ("none", "icepop", "kpop", "tis", "mis"):
            raise ValueError(f"mismatch method {self.method!r} is not one of none, icepop, kpop, tis, mis")
        if self.kpop_direction not in ("both", "train_infer", "infer_train"):
            raise ValueError(f"kpop_direction {self.kpop_direction!r} is not one of both, train_infer, infer_train")
        if self.mis_unit not in ("sequence", "geometric_mean"):
            raise ValueError(f"mis_unit {self.mis_unit!r} is not one of sequence, geometric_mean")
        if not self.kpop_phi > 0:
            raise ValueError(f"kpop_phi must be > 0, got {self.kpop_phi}")
        if not 0 <= self.icepop_low < 1 < self.icepop_high:
            raise ValueError(f"icepop band needs 0 <= low < 1 < high, got [{self.icepop_low}, {self.icepop_high}]")
        if not self.tis_cap >= 1:
            raise ValueError(f"tis_cap must be >= 1, got {self.tis_cap}")
        if not 0 <= self.mis_min < 1 <= self.mis_cap:
            raise ValueError(f"mis band needs 0 <= mis_min < 1 <= mis_cap, got [{self.mis_min}, {self.mis_cap}]")


def binary_kl(logp_p: torch.Tensor, logp_q: torch.Tensor) -> torch.Tensor:
    """D_B(p ‖ q) of the two-event partition {token, rest}, from the token's log-probs; fp32, elementwise."""
    logp_p, logp_q = logp_p.float(), logp_q.float()
    p = logp_p.exp()
    # -expm1(log p) is 1 - p without the cancellation of 1 - exp(log p) for confident tokens.
    rest_p = (-torch.expm1(logp_p)).clamp(_PROB_FLOOR, 1.0)
    rest_q = (-torch.expm1(logp_q)).clamp(_PROB_FLOOR, 1.0)
    # log((1-p)/(1-q)) = log1p((q-p)/(1-q)) with q - p = p expm1(log q - log p): the two terms of D_B nearly
    # cancel for small mismatch, so each must be accurate far below phi, which log(1-p) - log(1-q) is not in fp32.
    log_rest_ratio = torch.log1p(p * torch.expm1(logp_q - logp_p) / rest_q)
    # p rounds to exactly 1 for very confident tokens: (1-p) log(...) -> 0, where log1p(-1) would give -inf.
    return p * (logp_p - logp_q) + torch.where(rest_p > _PROB_FLOOR, rest_p * log_rest_ratio, 0.0)


def kpop_mask(
    logp_train_BT: torch.Tensor, logp_infer_BT: torch.Tensor, phi: float, direction: Direction = "both"
) -> torch.Tensor:
    """KPop's accept mask (bool): the binary KL is at most ``phi`` in the checked direction(s)."""
    accept = torch.ones_like(logp_train_BT, dtype=torch.bool)
    if direction in ("both", "train_infer"):
        accept &= binary_kl(logp_train_BT, logp_infer_BT) <= phi
    if direction in ("both", "infer_train"):
        accept &= binary_kl(logp_infer_BT, logp_train_BT) <= phi
    return accept


def _check_inputs(logp_train_BT: torch.Tensor, logp_infer_BT: torch.Tensor, mask_BT: torch.Tensor) -> None:
    if logp_train_BT.ndim != 2:
        raise ValueError(f"logp_train must be [B, T], got shape {tuple(logp_train_BT.shape)}")
    for name, tensor in (("logp_infer", logp_infer_BT), ("mask", mask_BT)):
        if tensor.shape != logp_train_BT.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, logp_train has {tuple(logp_train_BT.shape)}")


def _sequence_weight(
    log_k_BT: torch.Tensor, mask_BT: torch.Tensor, cfg: MismatchConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """MIS: (weight [B, T], kept [B, T]) from the row's ratio ρ, tested in log space so long rows cannot overflow."""
    log_rho_B = log_k_BT.sum(dim=1)
    if cfg.mis_unit == "geometric_mean":
        log_rho_B = log_rho_B / mask_BT.sum(dim=1).clamp_min(1)
    low = math.log(cfg.mis_min) if cfg.mis_min > 0 else -math.inf
    kept_B = (log_rho_B >= low) & (log_rho_B <= math.log(cfg.mis_cap))
    rho_B = torch.where(kept_B, log_rho_B, 0.0).exp()
    kept_BT = kept_B[:, None].expand_as(mask_BT)
    return rho_B[:, None].expand_as(log_k_BT), kept_BT


def mismatch_correction(
    logp_train_BT: torch.Tensor, logp_infer_BT: torch.Tensor, mask_BT: torch.Tensor, cfg: MismatchConfig
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The per-token weight (0 = masked) of ``cfg.method`` and raw statistics (module docstring).

    ``mask`` marks model tokens; the weight is 0 elsewhere. Inputs may be bf16: the ratio is taken in fp32.
    """
    _check_inputs(logp_train_BT, logp_infer_BT, mask_BT)
    mask_BT = mask_BT.bool()
    # fp32 before subtracting: the two engines' log-probs differ in the third bf16 digit, which is the signal.
    logp_train_BT = torch.where(mask_BT, logp_train_BT.detach().float(), 0.0)
    logp_infer_BT = torch.where(mask_BT, logp_infer_BT.detach().float(), 0.0)
    log_k_BT = logp_train_BT - logp_infer_BT
    k_BT = log_k_BT.exp()

    truncated_BT = torch.zeros_like(mask_BT)
    if cfg.method == "none":
        weight_BT, kept_BT = torch.ones_like(k_BT), mask_BT
    elif cfg.method == "tis":
        truncated_BT = k_BT > cfg.tis_cap
        weight_BT, kept_BT = k_BT.clamp(max=cfg.tis_cap), mask_BT
    elif cfg.method == "icepop":
        weight_BT, kept_BT = k_BT, (k_BT >= cfg.icepop_low) & (k_BT <= cfg.icepop_high)
    elif cfg.method == "kpop":
        weight_BT, kept_BT = k_BT, kpop_mask(logp_train_BT, logp_infer_BT, cfg.kpop_phi, cfg.kpop_direction)
    else:
        weight_BT, kept_BT = _sequence_weight(log_k_BT, mask_BT, cfg)
    kept_BT = kept_BT & mask_BT
    if not cfg.weighted and cfg.method in ("icepop", "kpop", "mis"):
        weight_BT = torch.ones_like(weight_BT)
    weight_BT = torch.where(kept_BT, weight_BT, 0.0)
    stats = mismatch_stats(logp_train_BT, logp_infer_BT, mask_BT, kept_BT)
    stats["truncated_fraction"] = _fraction(truncated_BT & mask_BT, mask_BT)
    stats["weight_mean"] = (weight_BT.sum() / mask_BT.sum().clamp_min(1)).detach()
    return weight_BT.detach(), stats


def _fraction(selected_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    return (selected_BT & mask_BT).sum().float() / mask_BT.sum().clamp_min(1)


def bucket_name(low: float, high: float) -> str:
    """Metric-name-safe label of a p_infer bucket, e.g. ``p0.001-0.01``."""
    return f"p{low:g}-{high:g}"


def mismatch_stats(
    logp_train_BT: torch.Tensor, logp_infer_BT: torch.Tensor, mask_BT: torch.Tensor, kept_BT: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Raw mismatch statistics over the model tokens of ``mask``; ``kept`` is the correction's accept mask.

    Per p_infer bucket [low, high): ``masked_fraction/<bucket>`` and ``tokens/<bucket>`` (so an empty bucket
    reads as 0 tokens, not as 0 % masked)."""
    mask_BT, kept_BT = mask_BT.bool(), kept_BT.bool()
    log_k_BT = torch.where(mask_BT, logp_train_BT.float() - logp_infer_BT.float(), 0.0)
    tokens = mask_BT.sum().clamp_min(1)
    masked_BT = mask_BT & ~kept_BT
    k_model = log_k_BT[mask_BT].exp()
    stats = {
        "masked_fraction": _fraction(masked_BT, mask_BT),
        "logp_abs_diff": log_k_BT.abs().sum() / tokens,
        # K3 estimator of KL(pi_infer || pi_train) from tokens sampled by pi_infer: (k - 1) - log k >= 0.
        "k3_kl": (torch.expm1(log_k_BT) - log_k_BT).sum() / tokens,
        "logp_train_mean": torch.where(mask_BT, logp_train_BT.float(), 0.0).sum() / tokens,
        "ratio_min": k_model.min() if k_model.numel() else torch.ones(()),
        "ratio_max": k_model.max() if k_model.numel() else torch.ones(()),
        "num_tokens": mask_BT.sum().float(),
    }
    p_infer_BT = logp_infer_BT.float().exp()
    for low, high in itertools.pairwise(PROB_BUCKETS):
        upper = p_infer_BT <= high if high == PROB_BUCKETS[-1] else p_infer_BT < high
        in_bucket_BT = mask_BT & (p_infer_BT >= low) & upper
        name = bucket_name(low, high)
        stats[f"masked_fraction/{name}"] = _fraction(masked_BT, in_bucket_BT)
        stats[f"tokens/{name}"] = in_bucket_BT.sum().float()
    return {key: value.detach() for key, value in stats.items()}
