"""One clipped policy-gradient loss for three action units: token (GRPO), sentence (LPO), sequence (GSPO).

Shape legend: B rows (responses), T response positions, U units per row (tokens, sentences or 1).

The three levels differ only in which tokens share an importance ratio (METHODS §5):

    r_u   = exp( mean_{t in u} (log pi(y_t) - log pi_old(y_t)) )     # unit ratio, geometric mean
    r~_t  = sg(r_u(t)) * pi(y_t) / sg(pi(y_t))                       # value r_u, gradient through token t
    L     = -1/N * sum_{b,t} mask * w * min( r~_t A_b, clip(r~_t, 1 - eps_low, 1 + eps_high) A_b )

A token unit gives GRPO's per-token ratio, one unit per response gives GSPO-token (same gradient as
GSPO's sequence ratio when unclipped), sentences give LPO. N is the number of model tokens in the
*global* batch and stays fixed when tokens are masked or weighted, so micro-batches summed equal the
full batch. ``w`` is an optional training-inference mismatch weight or mask (IcePop / KPop / TIS / MIS,
``training.objectives.mismatch``), treated as a constant. ``eps_low != eps_high`` gives an asymmetric band
(DAPO's clip-higher).

Decoupled PPO (AReaL, METHODS §4.3) names three policies: the current π_θ (gradient), the proximal π_prox
(the trainer's recompute at the weights before this update) and the behaviour π_behav (the rollout engine's
log-probs at the version that sampled each token). The ratio is taken against π_prox and clipped there; the
behaviour-to-proximal importance weight w_behav = correct(π_prox / π_behav) takes the place of ``w``:

    L = -1/N * sum_{b,t} mask * w_behav * min( r~_t A_b, clip(r~_t, 1 - eps_low, 1 + eps_high) A_b ),  r vs π_prox

so rollouts sampled by an older version train with a trust region around the current weights.
"""

from __future__ import annotations

from typing import Literal

import torch

from configs.base import config
from training.objectives.mismatch import MismatchConfig, mismatch_correction

Level = Literal["token", "sentence", "sequence"]

# (eps_low, eps_high) per level: GRPO 0.2, LPO 0.03 (Ling 2.0), GSPO (3e-4, 4e-4) (METHODS §5).
DEFAULT_CLIP: dict[str, tuple[float, float]] = {
    "token": (0.2, 0.2),
    "sentence": (0.03, 0.03),
    "sequence": (3e-4, 4e-4),
}


@config
class PolicyLossConfig:
    """``eps_low`` / ``eps_high`` left unset take the level's default from ``DEFAULT_CLIP``."""

    level: Level = "sentence"
    eps_low: float | None = None
    eps_high: float | None = None

    def __post_init__(self) -> None:
        if self.level not in DEFAULT_CLIP:
            raise ValueError(f"level {self.level!r} is not one of {sorted(DEFAULT_CLIP)}")
        low, high = self.clip_range
        if not (0.0 < low < 1.0 and high > 0.0):
            raise ValueError(f"clip range needs 0 < eps_low < 1 and eps_high > 0, got ({low}, {high})")

    @property
    def clip_range(self) -> tuple[float, float]:
        default_low, default_high = DEFAULT_CLIP[self.level]
        low = default_low if self.eps_low is None else self.eps_low
        high = default_high if self.eps_high is None else self.eps_high
        return low, high


def _check_same_shape(reference_name: str, reference: torch.Tensor, **others: torch.Tensor | None) -> None:
    for name, tensor in others.items():
        if tensor is not None and tensor.shape != reference.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, {reference_name} has {tuple(reference.shape)}")


def _unit_keys(unit_ids_BT: torch.Tensor, mask_BT: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Flat index b * T + unit of every token (masked tokens point at their row's unit 0), and B * T.

    A row of T tokens has at most T units, so ids in [0, T) suffice and the size needs no device sync.
    """
    if unit_ids_BT.dtype.is_floating_point or unit_ids_BT.dtype == torch.bool:
        raise ValueError(f"unit_ids must be an integer tensor, got {unit_ids_BT.dtype}")
    num_rows, width = unit_ids_BT.shape
    model_units = unit_ids_BT[mask_BT]
    if bool(((model_units < 0) | (model_units >= width)).any()):
        raise ValueError(f"every model token (mask 1) needs a unit id in [0, T={width})")
    units_BT = torch.where(mask_BT, unit_ids_BT, 0).long()
    rows_B1 = torch.arange(num_rows, device=units_BT.device)[:, None]
    return rows_B1 * width + units_BT, num_rows * width


def _segment_sums(
    x_BT: torch.Tensor, keys_BT: torch.Tensor, size: int, mask_BT: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-unit sums of ``x`` over model tokens and per-unit model-token counts, both flat [B * T]."""
    sums = x_BT.new_zeros(size).index_add(0, keys_BT.flatten(), torch.where(mask_BT, x_BT, 0.0).flatten())
    counts = x_BT.new_zeros(size).index_add(0, keys_BT.flatten(), mask_BT.to(x_BT.dtype).flatten())
    return sums, counts


def segment_mean(x_BT: torch.Tensor, unit_ids_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` over the model tokens of each (row, unit), broadcast back to its tokens; 0 where masked.

    Differentiable in ``x``. Unit ids are labels in [0, T) within a row; they need not be contiguous.
    """
    _check_same_shape("x", x_BT, unit_ids=unit_ids_BT, mask=mask_BT)
    mask_BT = mask_BT.bool()
    keys_BT, size = _unit_keys(unit_ids_BT, mask_BT)
    sums, counts = _segment_sums(x_BT, keys_BT, size, mask_BT)
    return torch.where(mask_BT, (sums / counts.clamp_min(1))[keys_BT], 0.0)


def group_advantages(rewards_NG: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Group-normalised advantages over the last dimension (the G samples of one prompt): (r - mean) / (std + eps).

    The population std is used so a group of one, or of equal rewards, gets advantage 0 rather than NaN.
    """
    if rewards_NG.ndim == 0 or rewards_NG.shape[-1] == 0:
        raise ValueError(f"rewards need a non-empty group dimension, got shape {tuple(rewards_NG.shape)}")
    rewards_NG = rewards_NG.float()
    mean = rewards_NG.mean(dim=-1, keepdim=True)
    std = rewards_NG.std(dim=-1, keepdim=True, correction=0)
    return (rewards_NG - mean) / (std + eps)


def _level_units(level: str, unit_ids_BT: torch.Tensor | None, mask_BT: torch.Tensor) -> torch.Tensor:
    if level == "token":
        return torch.arange(mask_BT.shape[1], device=mask_BT.device).expand_as(mask_BT)
    if level == "sequence":
        return torch.zeros_like(mask_BT, dtype=torch.long)
    if unit_ids_BT is None:
        raise ValueError("level 'sentence' needs unit_ids (see training.objectives.sentences)")
    return unit_ids_BT


def policy_loss(
    logp_BT: torch.Tensor,
    logp_old_BT: torch.Tensor,
    advantages_B: torch.Tensor,
    mask_BT: torch.Tensor,
    unit_ids_BT: torch.Tensor | None,
    cfg: PolicyLossConfig,
    *,
    num_tokens: int | torch.Tensor | None = None,
    mismatch_weight_BT: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate loss (see module docstring) and raw statistics of the unit ratios.

    ``logp`` is the current policy (carries the gradient), ``logp_old`` the proximal policy the ratio
    is taken against. ``unit_ids`` is used only at level 'sentence'; 'token' and 'sequence' define
    their own units. ``num_tokens`` is the model-token count of the whole batch when this call sees one
    micro-batch of it (default: ``mask.sum()`` of this call).
    """
    if logp_BT.ndim != 2:
        raise ValueError(f"logp must be [B, T], got shape {tuple(logp_BT.shape)}")
    _check_same_shape(
        "logp", logp_BT, logp_old=logp_old_BT, mask=mask_BT, unit_ids=unit_ids_BT, mismatch_weight=mismatch_weight_BT
    )
    if advantages_B.shape != logp_BT.shape[:1]:
        raise ValueError(f"advantages must be [B] = [{logp_BT.shape[0]}], got shape {tuple(advantages_B.shape)}")
    mask_BT = mask_BT.bool()
    mask_f_BT = mask_BT.float()
    if num_tokens is None:
        num_tokens = mask_f_BT.sum().clamp_min(1)
    elif not isinstance(num_tokens, torch.Tensor) and num_tokens <= 0:
        raise ValueError(f"num_tokens must be positive, got {num_tokens}")
    eps_low, eps_high = cfg.clip_range

    # fp32 before subtracting: bf16 log-probs differ in the third digit, which is the whole ratio signal.
    logp_BT = logp_BT.float()
    log_ratio_BT = torch.where(mask_BT, logp_BT.detach() - logp_old_BT.detach().float(), 0.0)
    units_BT = _level_units(cfg.level, unit_ids_BT, mask_BT)
    keys_BT, size = _unit_keys(units_BT, mask_BT)
    sums, counts = _segment_sums(log_ratio_BT, keys_BT, size, mask_BT)
    unit_ratio = torch.exp(sums / counts.clamp_min(1))
    # Masked tokens get a finite log-prob of 0 in the gradient path, so garbage there never becomes NaN.
    token_logp_BT = torch.where(mask_BT, logp_BT, 0.0)
    ratio_BT = unit_ratio[keys_BT] * torch.exp(token_logp_BT - token_logp_BT.detach())

    adv_B1 = advantages_B.float().detach()[:, None]
    surrogate_BT = torch.minimum(ratio_BT * adv_B1, ratio_BT.clamp(1 - eps_low, 1 + eps_high) * adv_B1)
    if mismatch_weight_BT is not None:
        surrogate_BT = surrogate_BT * mismatch_weight_BT.float().detach()
    # where, not a product with the mask: an overflowing ratio on a padded position must not turn into NaN.
    loss = -torch.where(mask_BT, surrogate_BT, 0.0).sum() / num_tokens

    present = counts > 0
    ratios = unit_ratio[present]
    outside = (ratios < 1 - eps_low) | (ratios > 1 + eps_high)
    tokens = mask_f_BT.sum().clamp_min(1)
    stats = {
        "clip_fraction": outside.float().mean() if ratios.numel() else torch.zeros(()),
        "ratio_mean": ratios.mean() if ratios.numel() else torch.ones(()),
        "ratio_max": ratios.max() if ratios.numel() else torch.ones(()),
        # k3 estimator of KL(pi_old || pi) from samples of pi_old: (rho - 1) - log rho >= 0.
        "approx_kl": ((torch.expm1(log_ratio_BT) - log_ratio_BT) * mask_f_BT).sum() / tokens,
        "logp_abs_diff": (log_ratio_BT.abs() * mask_f_BT).sum() / tokens,
        "num_units": present.sum(),
        "num_tokens": mask_f_BT.sum(),
    }
    return loss, stats


def decoupled_policy_loss(
    logp_BT: torch.Tensor,
    logp_prox_BT: torch.Tensor,
    logp_behav_BT: torch.Tensor,
    advantages_B: torch.Tensor,
    mask_BT: torch.Tensor,
    unit_ids_BT: torch.Tensor | None,
    cfg: PolicyLossConfig,
    correction: MismatchConfig,
    *,
    num_tokens: int | torch.Tensor | None = None,
    extra_weight_BT: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Decoupled PPO (module docstring): current ``logp`` (gradient), proximal ``logp_prox``, behaviour
    ``logp_behav``; w_behav = ``mismatch_correction(logp_prox, logp_behav, mask, correction)``.

    ``correction`` chooses how the behaviour weight is bounded: TIS truncates it, IcePop / KPop / MIS mask
    outliers (AReaL's ``behav_imp_weight_cap`` is IcePop with ``icepop_low=0``). When π_prox is the
    trainer at the behaviour weights (no staleness) this is exactly the mismatch correction of METHODS §4;
    with stale rollouts the weight also carries the policy's drift since sampling. ``extra_weight_BT``
    multiplies in (e.g. a KPop mask computed at the behaviour weights). Statistics of the behaviour weight
    come back under ``behav/``.
    """
    _check_same_shape("logp", logp_BT, logp_prox=logp_prox_BT, logp_behav=logp_behav_BT)
    weight_BT, behav_stats = mismatch_correction(logp_prox_BT, logp_behav_BT, mask_BT, correction)
    if extra_weight_BT is not None:
        _check_same_shape("logp", logp_BT, extra_weight=extra_weight_BT)
        weight_BT = weight_BT * extra_weight_BT.float().detach()
    loss, stats = policy_loss(
        logp_BT,
        logp_prox_BT,
        advantages_B,
        mask_BT,
        unit_ids_BT,
        cfg,
        num_tokens=num_tokens,
        mismatch_weight_BT=weight_BT,
    )
    stats.update({f"behav/{name}": value for name, value in behav_stats.items()})
    return loss, stats
