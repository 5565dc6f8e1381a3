"""The distillation stage's config (``training.distill``): which specialist teaches which task family, how
teachers sample the curated prompts, the two training phases (logit distillation on verified teacher
samples, then on-policy distillation) and the before/after evaluation.

Defaults are the tiny profile: the whole stage runs in about a minute and a half on two CPU cores.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from configs.base import ConfigError, config
from configs.data import ENVIRONMENT_FAMILIES
from configs.training import EngineConfig

# The stages whose checkpoints teach: the KPop-RL agentic specialist and the instant model of post_train.
TEACHERS = ("kpop_rl", "post_train")
AGENTIC_FAMILIES = ("search", "tool_use", "workflow")


def _default_teachers() -> dict[str, str]:
    # The agentic specialist teaches the multi-turn tool families, the instant model everything else.
    return {family: "kpop_rl" if family in AGENTIC_FAMILIES else "post_train" for family in ENVIRONMENT_FAMILIES}


@config
class TeacherSamplingConfig:
    """Phase 1's data: each teacher samples its families' curated prompts; verified samples are kept."""

    # Curation's prompt table the teachers answer (both are disjoint from the eval set).
    prompt_table: Literal["rl_prompts", "sft_prompts"] = "rl_prompts"
    prompts_per_family: int = 8
    samples_per_prompt: int = 2
    temperature: float = 0.7
    max_new_tokens: int = 64
    max_tool_turns: int = 4


@config
class LogitPhaseConfig:
    """Forward KL to the teacher's top-k log-probs on its verified samples (``topk_forward_kl``)."""

    steps: int = 24
    batch_size: int = 8
    lr: float = 1e-4


@config
class OnPolicyPhaseConfig:
    """The student samples, the teacher scores its tokens, per-token reverse KL (``on_policy_reverse_kl``).

    The student samples at temperature 1: the reverse-KL estimate needs tokens drawn from pi_S itself."""

    steps: int = 4
    prompts_per_step: int = 8
    samples_per_prompt: int = 2
    max_new_tokens: int = 48
    lr: float = 5e-5


@config
class DistillEvalConfig:
    """Greedy evaluation of the student before and after, and of each teacher, on the same eval prompts."""

    prompts_per_family: int = 8
    max_new_tokens: int = 80
    max_tool_turns: int = 4


@config
class DistillConfig:
    engine: EngineConfig = EngineConfig()
    # Teacher top-k entries recorded per response token; the rest of the vocabulary is one bucket.
    top_k: int = 8
    # Family -> the teacher stage that serves it; a family left out is not distilled.
    teachers: dict[str, str] = dataclasses.field(default_factory=_default_teachers)
    # Prompt + response tokens of one teacher sample: the padded batch is this wide at most.
    max_sample_tokens: int = 256
    sampling: TeacherSamplingConfig = TeacherSamplingConfig()
    logit: LogitPhaseConfig = LogitPhaseConfig()
    on_policy: OnPolicyPhaseConfig = OnPolicyPhaseConfig()
    eval: DistillEvalConfig = DistillEvalConfig()

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ConfigError(f"distill.top_k must be >= 1, got {self.top_k}")
        unknown = sorted(set(self.teachers) - set(ENVIRONMENT_FAMILIES))
        if unknown:
            raise ConfigError(f"distill.teachers: unknown family {unknown[0]!r} (known: {ENVIRONMENT_FAMILIES})")
        bad = sorted({t for t in self.teachers.values() if t not in TEACHERS})
        if bad:
            raise ConfigError(f"distill.teachers: unknown teacher {bad[0]!r} (known: {TEACHERS})")
        if not self.teachers:
            raise ConfigError("distill.teachers must name a teacher for at least one family")
        if self.max_sample_tokens < 2:
            raise ConfigError("distill.max_sample_tokens must be >= 2 (a prompt and a response token)")
        s, lo, op, ev = self.sampling, self.logit, self.on_policy, self.eval
        sizes = {
            "sampling.prompts_per_family": s.prompts_per_family,
            "sampling.samples_per_prompt": s.samples_per_prompt,
            "sampling.max_new_tokens": s.max_new_tokens,
            "logit.batch_size": lo.batch_size,
            "on_policy.prompts_per_step": op.prompts_per_step,
            "on_policy.samples_per_prompt": op.samples_per_prompt,
            "on_policy.max_new_tokens": op.max_new_tokens,
            "eval.prompts_per_family": ev.prompts_per_family,
            "eval.max_new_tokens": ev.max_new_tokens,
        }
        for key, value in sizes.items():
            if value < 1:
                raise ConfigError(f"distill.{key} must be >= 1, got {value}")
        if lo.steps < 0 or op.steps < 0:
            raise ConfigError("distill.logit.steps and distill.on_policy.steps must be >= 0 (0 skips the phase)")
        if min(lo.lr, op.lr) <= 0:
            raise ConfigError("distill.logit.lr and distill.on_policy.lr must be positive")
        if s.temperature < 0:
            raise ConfigError(f"distill.sampling.temperature must be >= 0, got {s.temperature}")
