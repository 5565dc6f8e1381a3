"""Bidirectional preference alignment with focal rubric weights (METHODS §6.4).

Shape legend: P preference pairs, T response positions, N scored responses, D rubric dimensions.

**Score.** Every response gets one score in [-1, 1] whose sign says verified good or bad (the
"bidirectional" reward), and whose size inside each half comes from rubric dimensions s_d in [0, 1]
weighted by focal weights w (sum 1):

    q     = sum_d w_d s_d                               quality; default dims: concise, non_redundant
    score = q                if correct and well formatted        in [0, 1]    (incentive)
          = -1 + 0.5 q       if wrong                             in [-1, -0.5] (penalty, worse if verbose)
          = -1               if the format is broken

so every correct response outscores every wrong one, and the gap between two correct responses is
set by the rubric alone.

**Objective.** DPO with a score-dependent offset (ODPO, Amini et al. 2024):

    L = -log sigmoid( beta * [(log pi(y_c) - log pi_ref(y_c)) - (log pi(y_r) - log pi_ref(y_r))]
                      - margin_scale * max(score_c - score_r, 0) )

with sequence log-probs summed over model tokens. Why the offset: the policy must separate a pair by
more when the verified gap is larger, so correct-vs-wrong pairs (gap >= 0.5) are pushed apart hard,
while a correct pair that differs only in length or redundancy gets a small offset: concision is
preferred without rewarding ever-shorter answers for their own sake (length hacking). The widened
score range of the bidirectional reward is what makes these offsets informative.

**Focal weights.** ``w_d ∝ (1 - sat_d)^gamma``, ``sat_d`` the running mean of on-policy scores of
dimension d, renormalised at every update: weight moves from dimensions the policy already
satisfies to those it does not. They enter training twice, both times for that reason:

* in the score (``q`` above), so the offset of a pair of two correct responses reflects the dimensions
  that still matter;
* as the pair's training weight (``focal_pair_weights``): a pair whose rejected side lost on one rubric
  dimension only (``redundant`` -> non_redundant, ``longer`` -> concise) counts ``D * w_d`` in the loss
  (1 at uniform weights). DPO's gradient per pair does not scale with the score gap, so without this a
  saturated dimension would keep pulling (ever shorter answers: length hacking); with it, its pairs fade
  out. Pairs against a wrong or malformed response keep weight 1: the verified signal is never discounted.

    L = sum_p weight_p * (-log sigmoid(...)_p) / P
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from configs.base import config
from training.objectives.rewards import length_position
from training.objectives.segments import redundancy_fraction

DEFAULT_DIMS = ("concise", "non_redundant")
# Pairs of a prompt are listed with the most informative rejected responses first.
_KIND_ORDER = {"format": 0, "wrong": 1, "redundant": 2, "longer": 3}
# The one rubric dimension a pair of two correct, well-formatted responses differs in.
KIND_DIMENSION = {"redundant": "non_redundant", "longer": "concise"}


@config
class PreferenceConfig:
    beta: float = 0.1
    margin_scale: float = 1.0
    focal_gamma: float = 1.0
    focal_momentum: float = 0.9

    def __post_init__(self) -> None:
        if self.beta <= 0 or self.margin_scale < 0 or self.focal_gamma < 0:
            raise ValueError("need beta > 0, margin_scale >= 0 and focal_gamma >= 0")
        if not 0.0 <= self.focal_momentum < 1.0:
            raise ValueError(f"focal_momentum must be in [0, 1), got {self.focal_momentum}")


class FocalRubricWeights:
    """Running saturation per rubric dimension and the focal weights derived from it."""

    def __init__(self, dims: Sequence[str], cfg: PreferenceConfig) -> None:
        if not dims or len(set(dims)) != len(dims):
            raise ValueError(f"need distinct rubric dimensions, got {list(dims)}")
        self.dims = tuple(dims)
        self.cfg = cfg
        # None until the first update, so the first batch sets saturation instead of being shrunk to 0.
        self.saturation_D: torch.Tensor | None = None

    def update(self, scores_ND: torch.Tensor) -> torch.Tensor:
        """Fold one batch of on-policy rubric scores (normalised to [0, 1]) in; returns the new weights."""
        if scores_ND.ndim != 2 or scores_ND.shape[1] != len(self.dims) or scores_ND.shape[0] == 0:
            raise ValueError(f"scores must be [N>0, {len(self.dims)}], got shape {tuple(scores_ND.shape)}")
        batch_D = scores_ND.float().clamp(0.0, 1.0).mean(dim=0)
        m = self.cfg.focal_momentum
        self.saturation_D = batch_D if self.saturation_D is None else m * self.saturation_D + (1 - m) * batch_D
        return self.weights()

    def weights(self) -> torch.Tensor:
        """Focal weights [D], summing to 1; uniform before any update or when every dimension is saturated."""
        uniform_D = torch.full((len(self.dims),), 1.0 / len(self.dims))
        if self.saturation_D is None:
            return uniform_D
        raw_D = (1.0 - self.saturation_D).clamp(min=0.0) ** self.cfg.focal_gamma
        total = raw_D.sum()
        return raw_D / total if total > 0 else uniform_D

    def state_dict(self) -> dict[str, Any]:
        saturation = None if self.saturation_D is None else self.saturation_D.tolist()
        return {"dims": list(self.dims), "saturation": saturation}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if tuple(state["dims"]) != self.dims:
            raise ValueError(f"state has dimensions {state['dims']}, these weights have {list(self.dims)}")
        saturation = state["saturation"]
        self.saturation_D = None if saturation is None else torch.tensor(saturation, dtype=torch.float32)


def rubric_matrix(group: Sequence[Mapping[str, Any]], dims: Sequence[str] = DEFAULT_DIMS) -> torch.Tensor:
    """Rubric scores [N, D] in [0, 1] for one prompt's responses (rows with ``text`` and ``length``).

    ``concise`` is 1 for the group's shortest response and 0 for its longest; ``non_redundant`` is
    1 - redundancy_fraction(text); any other dimension is read from the row's ``rubric`` mapping.
    """
    concise_N = length_position(torch.tensor([float(r["length"]) for r in group])) + 0.5
    columns = []
    for dim in dims:
        if dim == "concise":
            columns.append(concise_N.clamp(0.0, 1.0))
        elif dim == "non_redundant":
            columns.append(torch.tensor([1.0 - redundancy_fraction(r["text"]) for r in group]))
        else:
            columns.append(torch.tensor([float(r["rubric"][dim]) for r in group]).clamp(0.0, 1.0))
    return torch.stack(columns, dim=1)


def bidirectional_scores(
    group: Sequence[Mapping[str, Any]], rubric_ND: torch.Tensor, weights_D: torch.Tensor
) -> torch.Tensor:
    """Scores [N] in [-1, 1] (module docstring) from ``correct`` / ``format_ok`` and the rubric."""
    quality_N = rubric_ND.float() @ weights_D.float()
    correct_N = torch.tensor([bool(r["correct"]) for r in group])
    format_ok_N = torch.tensor([bool(r["format_ok"]) for r in group])
    scores_N = torch.where(correct_N, quality_N, -1.0 + 0.5 * quality_N)
    return torch.where(format_ok_N, scores_N, -1.0)


@dataclass(frozen=True)
class PreferencePair:
    prompt_id: Hashable
    chosen: str
    rejected: str
    chosen_score: float
    rejected_score: float
    kind: str  # why the rejected one lost: format, wrong, redundant or longer


def build_preference_pairs(
    rows: Iterable[Mapping[str, Any]],
    *,
    dims: Sequence[str] = DEFAULT_DIMS,
    weights_D: torch.Tensor | None = None,
    max_pairs_per_prompt: int | None = None,
) -> list[PreferencePair]:
    """Pairs (shortest correct, worse response) per prompt from verified candidate rows.

    Rows carry ``prompt_id``, ``text``, ``correct``, ``format_ok`` and ``length``. The chosen response is
    the shortest correct, well-formatted one (earliest on ties); rejected are the wrong or badly
    formatted ones, then correct ones that are redundant or strictly longer. A rejected text never
    equals the chosen text. Prompts without a correct response give no pairs.
    """
    weights_D = torch.full((len(dims),), 1.0 / len(dims)) if weights_D is None else weights_D
    groups: dict[Hashable, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["prompt_id"], []).append(row)

    pairs: list[PreferencePair] = []
    for prompt_id, group in groups.items():
        good = [i for i, r in enumerate(group) if r["correct"] and r["format_ok"]]
        if not good:
            continue
        rubric_ND = rubric_matrix(group, dims)
        scores_N = bidirectional_scores(group, rubric_ND, weights_D).tolist()
        best = min(good, key=lambda i: group[i]["length"])
        chosen = group[best]
        found = []
        for i, row in enumerate(group):
            if row["text"] == chosen["text"]:
                continue
            if not row["format_ok"]:
                kind = "format"
            elif not row["correct"]:
                kind = "wrong"
            elif redundancy_fraction(row["text"]) > 0:
                kind = "redundant"
            elif row["length"] > chosen["length"]:
                kind = "longer"
            else:
                continue
            found.append((_KIND_ORDER[kind], i, kind))
        for _, i, kind in sorted(found)[:max_pairs_per_prompt]:
            pairs.append(PreferencePair(prompt_id, chosen["text"], group[i]["text"], scores_N[best], scores_N[i], kind))
    return pairs


def focal_pair_weights(kinds: Sequence[str], dims: Sequence[str], weights_D: torch.Tensor) -> torch.Tensor:
    """Training weight [P] of each pair (module docstring): ``D * w_d`` for a pair whose rejected side lost on
    rubric dimension d alone, 1 for a pair against a wrong or malformed response or about an untracked dimension."""
    if weights_D.shape != (len(dims),):
        raise ValueError(f"weights must be [{len(dims)}] for dimensions {list(dims)}, got {tuple(weights_D.shape)}")
    unknown = sorted(set(kinds) - set(_KIND_ORDER))
    if unknown:
        raise ValueError(f"unknown pair kind {unknown[0]!r} (known: {sorted(_KIND_ORDER)})")
    index = {dim: d for d, dim in enumerate(dims)}
    scaled_D = weights_D.float() * len(dims)
    one = scaled_D.new_ones(())
    per_pair = [scaled_D[index[KIND_DIMENSION[k]]] if KIND_DIMENSION.get(k) in index else one for k in kinds]
    return torch.stack(per_pair) if per_pair else scaled_D.new_zeros(0)


def sequence_logp(logp_PT: torch.Tensor, mask_PT: torch.Tensor) -> torch.Tensor:
    """Summed log-prob [P] of the model tokens of each response, in fp32."""
    if logp_PT.ndim != 2 or logp_PT.shape != mask_PT.shape:
        raise ValueError(f"logp {tuple(logp_PT.shape)} and mask {tuple(mask_PT.shape)} must both be [P, T]")
    return torch.where(mask_PT.bool(), logp_PT.float(), 0.0).sum(dim=1)


def preference_loss(
    policy_chosen_PT: torch.Tensor,
    policy_rejected_PT: torch.Tensor,
    ref_chosen_PT: torch.Tensor,
    ref_rejected_PT: torch.Tensor,
    mask_chosen_PT: torch.Tensor,
    mask_rejected_PT: torch.Tensor,
    score_chosen_P: torch.Tensor,
    score_rejected_P: torch.Tensor,
    cfg: PreferenceConfig,
    weight_P: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Offset-DPO loss over P pairs, each weighted by ``weight_P`` (all 1 when None) and divided by P (module
    docstring), and raw statistics of the implicit rewards. A pair of weight 0 contributes no gradient."""
    num_pairs = policy_chosen_PT.shape[0]
    for side, policy, ref, mask in (
        ("chosen", policy_chosen_PT, ref_chosen_PT, mask_chosen_PT),
        ("rejected", policy_rejected_PT, ref_rejected_PT, mask_rejected_PT),
    ):
        if not (policy.ndim == 2 and policy.shape == ref.shape == mask.shape and policy.shape[0] == num_pairs):
            raise ValueError(
                f"{side}: policy {tuple(policy.shape)}, ref {tuple(ref.shape)} and mask {tuple(mask.shape)} "
                f"must all be [P={num_pairs}, T]"
            )
    if weight_P is not None and (weight_P.shape != (num_pairs,) or bool((weight_P < 0).any())):
        raise ValueError(f"pair weights must be [P={num_pairs}] and >= 0, got {weight_P}")
    if score_chosen_P.shape != (num_pairs,) or score_rejected_P.shape != (num_pairs,):
        raise ValueError(
            f"scores must be [P={num_pairs}], got {tuple(score_chosen_P.shape)} and {tuple(score_rejected_P.shape)}"
        )

    chosen_P = sequence_logp(policy_chosen_PT, mask_chosen_PT) - sequence_logp(ref_chosen_PT, mask_chosen_PT).detach()
    rejected_P = (
        sequence_logp(policy_rejected_PT, mask_rejected_PT) - sequence_logp(ref_rejected_PT, mask_rejected_PT).detach()
    )
    implicit_P = cfg.beta * (chosen_P - rejected_P)
    offset_P = cfg.margin_scale * (score_chosen_P.float() - score_rejected_P.float()).clamp(min=0.0)
    # softplus(-x) = -log sigmoid(x), without the underflow of taking log of a tiny sigmoid.
    loss_P = F.softplus(-(implicit_P - offset_P))
    # Divided by P, not by the weights' sum: a down-weighted pair lowers the step, it does not re-scale the others.
    loss = loss_P.mean() if weight_P is None else (weight_P.to(loss_P) * loss_P).sum() / num_pairs
    implicit_P = implicit_P.detach()
    stats = {
        "implicit_margin": implicit_P.mean(),
        "offset": offset_P.mean(),
        "accuracy": (implicit_P > 0).float().mean(),
        "offset_accuracy": (implicit_P > offset_P).float().mean(),
        "chosen_reward": cfg.beta * chosen_P.detach().mean(),
        "rejected_reward": cfg.beta * rejected_P.detach().mean(),
    }
    return loss, stats
