"""Specialist -> unified distillation losses (METHODS §6: specialists are distilled into one instant model).

Shape legend: B rows, T positions, V vocabulary, K teacher top-k entries per position.

**Logit distillation** (``topk_forward_kl``), on teacher samples that passed the verifier. The teacher's
full next-token distribution is not stored, only its top-k ``(id, log p_T)`` per position, so the KL is
taken over a partition of the vocabulary into K + 1 buckets: the K teacher ids, and one "rest" bucket for
every other id.

    p_T(rest) = 1 - sum_k p_T(k)                     the teacher's tail mass
    q_S(rest) = 1 - sum_k q_S(k)                     the student's mass outside the teacher's K ids
    KL_t      = sum_k p_T(k) (log p_T(k) - log q_S(k)) + p_T(rest) (log p_T(rest) - log q_S(rest))
    L         = 1/N * sum_{b,t} mask * KL_t

Why a rest bucket rather than the two usual shortcuts: renormalising the teacher's top-k to sum to one
claims the teacher is more confident than it is, and dropping the tail lets the student push mass onto
ids the teacher rates low without any cost; both bias the student towards a peakier distribution. The
bucketed KL is a true divergence between two distributions on K + 1 outcomes: it is >= 0, it is 0 exactly
when the student gives every top-k id the teacher's probability and the tail the teacher's tail mass, and
(data processing inequality) it lower-bounds the full-vocabulary KL, equal to it when K = V. Inside the
tail the student is free: the teacher told us nothing about how it splits that mass.

**On-policy distillation** (``on_policy_reverse_kl``; Agarwal et al. 2024 "GKD", Thinking Machines 2025
"On-Policy Distillation"): the student samples, the teacher scores the student's tokens, and the per-token
reverse KL estimate is the (negative) reward, with no reward model and discount 0 (each token answers only
for itself):

    k_t  = log pi_behav(y_t) - log pi_T(y_t)          y_t ~ pi_behav (the student that sampled)
    r_t  = exp(log pi_S(y_t) - log pi_behav(y_t))     importance ratio of the current student, 1 on-policy
    L    = 1/N * sum_{b,t} mask * sg(k_t) * r_t

On-policy its value is the mean reverse-KL estimate and its gradient sg(k_t) * grad log pi_S(y_t) is the
score-function gradient of E_{y ~ pi_S}[log pi_S(y) - log pi_T(y)] (the term from differentiating log
pi_S inside the expectation has expectation zero). N is the number of masked-in tokens in the global batch
unless ``num_tokens`` fixes it, as in ``sft_loss``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# exp(log p) for a probability computed in fp32 can exceed 1 by rounding; a tail "mass" of -1e-7 is 0.
_MASS_EPS = 1e-6


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x <= 0, stable at both ends (Mächler 2012): expm1 near 0, log1p far from it.

    Each branch sees its input clamped to its own side, so the branch ``where`` discards never produces an
    infinity whose zero-weighted gradient would still be NaN. x is capped just below 0: a top-k holding all
    the mass leaves a rest bucket of ~1e-12, not log 0."""
    x = x.clamp(max=-1e-12)
    cut = -math.log(2.0)
    near_zero = torch.log(-torch.expm1(x.clamp(min=cut)))
    far = torch.log1p(-torch.exp(x.clamp(max=cut)))
    return torch.where(x > cut, near_zero, far)


def _denominator(mask_BT: torch.Tensor, num_tokens: int | torch.Tensor | None) -> torch.Tensor:
    n = mask_BT.sum() if num_tokens is None else torch.as_tensor(num_tokens, dtype=torch.float32)
    return n.float().clamp(min=1.0)


def topk_forward_kl(
    student_logits_BTV: torch.Tensor,
    teacher_ids_BTK: torch.Tensor,
    teacher_logp_BTK: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    num_tokens: int | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Masked mean over positions of KL(teacher || student) on the K + 1 buckets (module docstring).

    ``student_logits[b, t]`` and the teacher's top-k at ``[b, t]`` describe the same next-token distribution.
    The K ids of a position must be distinct (each bucket counted once; the data contract checks it), and
    masked-out positions must still hold finite teacher log-probs (they are left out of value and gradient,
    but a NaN there would reach the gradient through ``where``). ``mask`` may weight positions.
    Stats: ``kl`` (the loss before any denominator override), ``kl_max``, ``teacher_tail_mass`` and
    ``student_tail_mass`` (mean over masked-in positions), ``top1_agreement`` (student argmax == the
    teacher's most likely id), ``tokens``.
    """
    if student_logits_BTV.ndim != 3:
        raise ValueError(f"student_logits must be [B, T, V], got {tuple(student_logits_BTV.shape)}")
    B, T, _ = student_logits_BTV.shape
    if teacher_ids_BTK.shape != teacher_logp_BTK.shape or teacher_ids_BTK.shape[:2] != (B, T):
        raise ValueError(
            f"teacher ids {tuple(teacher_ids_BTK.shape)} and logprobs {tuple(teacher_logp_BTK.shape)} must both be "
            f"[B, T, K] over student logits {tuple(student_logits_BTV.shape)}"
        )
    if mask_BT.shape != (B, T):
        raise ValueError(f"mask has shape {tuple(mask_BT.shape)}, expected {(B, T)}")
    mask = mask_BT.float()
    logq_BTV = F.log_softmax(student_logits_BTV.float(), dim=-1)
    logq_BTK = torch.gather(logq_BTV, 2, teacher_ids_BTK.long())
    logp_BTK = teacher_logp_BTK.float()
    p_BTK = logp_BTK.exp()

    # Rest buckets in log space: log(1 - sum_k exp(.)) of each side's top-k mass.
    logp_rest_BT = _log1mexp(torch.logsumexp(logp_BTK, dim=-1))
    logq_rest_BT = _log1mexp(torch.logsumexp(logq_BTK, dim=-1))
    p_rest_BT = (1.0 - p_BTK.sum(-1)).clamp(min=0.0)
    # 0 * log 0 = 0: a teacher without tail mass puts no weight on the rest bucket, whatever the student does.
    rest_term_BT = torch.where(p_rest_BT > _MASS_EPS, p_rest_BT * (logp_rest_BT - logq_rest_BT), 0.0)
    kl_BT = torch.where(mask > 0, (p_BTK * (logp_BTK - logq_BTK)).sum(-1) + rest_term_BT, 0.0)

    n = _denominator(mask_BT, num_tokens)
    loss = (kl_BT * mask).sum() / n
    with torch.no_grad():
        seen = mask.sum().clamp(min=1.0)
        top1_BT = teacher_ids_BTK.gather(2, logp_BTK.argmax(-1, keepdim=True))[..., 0]
        stats = {
            "kl": (kl_BT * mask).sum() / seen,
            "kl_max": kl_BT.max(),
            "teacher_tail_mass": (p_rest_BT * mask).sum() / seen,
            "student_tail_mass": ((1.0 - logq_BTK.exp().sum(-1)).clamp(min=0.0) * mask).sum() / seen,
            "top1_agreement": ((logq_BTV.argmax(-1) == top1_BT).float() * mask).sum() / seen,
            "tokens": mask.sum(),
        }
    return loss, stats


def on_policy_reverse_kl(
    student_logp_BT: torch.Tensor,
    behaviour_logp_BT: torch.Tensor,
    teacher_logp_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    num_tokens: int | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Per-token reverse-KL policy loss on the student's own samples (module docstring).

    ``student_logp``: log pi_S of the sampled tokens under the weights being trained (carries the gradient);
    ``behaviour_logp``: the same under the weights that sampled them; ``teacher_logp``: the teacher's score
    of the same tokens. The last two are constants. Stats: ``reverse_kl`` (mean k_t), ``reverse_kl_max``,
    ``ratio_max`` (1 on-policy), ``teacher_logp`` / ``student_logp`` (means), ``tokens``.
    """
    for name, tensor in (("behaviour_logp", behaviour_logp_BT), ("teacher_logp", teacher_logp_BT), ("mask", mask_BT)):
        if tensor.shape != student_logp_BT.shape:
            raise ValueError(f"{name} has shape {tuple(tensor.shape)}, student_logp has {tuple(student_logp_BT.shape)}")
    mask = mask_BT.float()
    valid = mask > 0
    logp_b = behaviour_logp_BT.detach().float()
    logp_T = teacher_logp_BT.detach().float()
    # where, not a product with the mask: padding may hold any log-prob (even -inf) and must not leak into
    # the value or the gradient.
    k_BT = torch.where(valid, logp_b - logp_T, 0.0)
    ratio_BT = torch.exp(torch.where(valid, student_logp_BT.float() - logp_b, 0.0))
    loss = (k_BT * ratio_BT * mask).sum() / _denominator(mask_BT, num_tokens)
    with torch.no_grad():
        seen = mask.sum().clamp(min=1.0)
        stats = {
            "reverse_kl": (k_BT * mask).sum() / seen,
            "reverse_kl_max": k_BT.masked_fill(~valid, -math.inf).max() if valid.any() else torch.zeros(()),
            "ratio_max": ratio_BT.masked_fill(~valid, 0.0).max(),
            "teacher_logp": (torch.where(valid, logp_T, 0.0) * mask).sum() / seen,
            "student_logp": (torch.where(valid, logp_b, 0.0) * mask).sum() / seen,
            "tokens": mask.sum(),
        }
    return loss, stats
