"""Training objectives as pure functions ``(inputs, named policies, mask, cfg) -> (loss, stats)``, and the
data-side pieces they need: SFT packing, the token/sentence/sequence policy loss (GRPO / LPO / GSPO),
LPO's sentence units, Evo-CoT rewards, shortest-correct distillation, specialist distillation (top-k
forward KL, on-policy reverse KL) and bidirectional preference pairs.
"""

from training.objectives.distill import select_shortest_correct
from training.objectives.distill_kl import on_policy_reverse_kl, topk_forward_kl
from training.objectives.policy_gradient import (
    PolicyLossConfig,
    group_advantages,
    policy_loss,
    segment_mean,
)
from training.objectives.preference import (
    FocalRubricWeights,
    PreferenceConfig,
    PreferencePair,
    bidirectional_scores,
    build_preference_pairs,
    focal_pair_weights,
    preference_loss,
    rubric_matrix,
)
from training.objectives.rewards import EvoCoTConfig, ScoredResponse, evo_cot_rewards, length_reward
from training.objectives.segments import prune_after_answer, redundancy_fraction
from training.objectives.sentences import batch_sentence_unit_ids, sentence_unit_ids
from training.objectives.sft import pack_examples, sft_loss

__all__ = [
    "EvoCoTConfig",
    "FocalRubricWeights",
    "PolicyLossConfig",
    "PreferenceConfig",
    "PreferencePair",
    "ScoredResponse",
    "batch_sentence_unit_ids",
    "bidirectional_scores",
    "build_preference_pairs",
    "evo_cot_rewards",
    "focal_pair_weights",
    "group_advantages",
    "length_reward",
    "on_policy_reverse_kl",
    "pack_examples",
    "policy_loss",
    "preference_loss",
    "prune_after_answer",
    "redundancy_fraction",
    "rubric_matrix",
    "segment_mean",
    "select_shortest_correct",
    "sentence_unit_ids",
    "sft_loss",
    "topk_forward_kl",
]
