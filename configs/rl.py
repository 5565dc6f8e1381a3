"""The KPop RL stage's config (issue 12; METHODS §4, §6.3, §7): asynchronous multi-environment RL of the
post-trained hybrid over the agentic families, with a training-inference mismatch correction.

The defaults are the tiny profile's: a couple of minutes on two CPU cores. ``scale_kpop_rl`` gives the values
the papers report for the large profiles.
"""

from __future__ import annotations

from typing import Literal

from configs.base import ConfigError, config
from configs.data import ENVIRONMENT_FAMILIES

# The "Ring" half of the recipe trains on the agentic families; math is the instant model's (post_train).
AGENTIC_FAMILIES = ("code", "search", "tool_use", "workflow")


@config
class KPopRLConfig:
    families: tuple[str, ...] = AGENTIC_FAMILIES
    # Scheduler (METHODS §7): updates, prompt groups per update, responses per prompt, staleness bound η, the
    # token budget Φ per policy version (None: no budget), the engine-call granularity of partial rollouts.
    steps: int = 6
    batch_groups: int = 3
    samples_per_prompt: int = 4
    max_staleness: int = 2
    # METHODS §7.3's toy value: Φ = 0.5 × batch × mean length (3 groups × 4 samples × ~40 tokens / 2).
    step_token_budget: int | None = 240
    chunk_tokens: int = 16
    rollout_workers: int = 2
    max_concurrent_groups: int = 8
    env_workers: int = 8
    temperature: float = 1.0
    max_new_tokens: int = 48
    max_tool_turns: int = 2
    # The rollout engine runs a copy of the policy in this precision while the trainer stays fp32: the real
    # training-inference gap the correction is there for (fp32 here means no gap, a control run).
    rollout_precision: Literal["bf16", "fp16", "fp32"] = "bf16"
    sync_timeout_s: float = 60.0
    # Mismatch correction of the behaviour weight (METHODS §4); the knobs of the unused methods stay inert.
    correction: Literal["kpop", "icepop", "tis", "mis", "none"] = "kpop"
    correction_weighted: bool = True
    kpop_phi: float = 1e-3
    kpop_direction: Literal["both", "train_infer", "infer_train"] = "both"
    icepop_low: float = 0.5
    icepop_high: float = 5.0
    tis_cap: float = 2.0
    mis_cap: float = 2.0
    mis_min: float = 0.0
    mis_unit: Literal["sequence", "geometric_mean"] = "sequence"
    # Decoupled PPO loss: ratio unit and DAPO's asymmetric clip band around π_prox.
    loss_level: Literal["token", "sentence", "sequence"] = "token"
    clip_low: float = 0.2
    clip_high: float = 0.28
    updates_per_step: int = 2
    # Gentle, as post_train's RL phase found for this policy (larger steps collapsed tool use).
    lr: float = 5e-5
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    # Reward: verified correctness minus METHODS §6.3's zlib repetition penalty coef · max(0, (τ - cr) / τ).
    repetition_penalty: float = 0.2
    repetition_tau: float = 0.35
    # Curriculum by pass rate (METHODS §6.3 DPR, §7.2's cold-start band): probe this many prompts per family
    # with this many samples, keep ``prompts_per_family`` preferring pass rates inside [low, high] (the hard
    # end first), then the nearest below the band (the lowest difficulties first).
    curriculum_probe_prompts: int = 12
    curriculum_probe_samples: int = 4
    curriculum_pass_low: float = 0.1
    curriculum_pass_high: float = 0.9
    prompts_per_family: int = 6
    # Lossless resume: the scheduler's atomic checkpoint every this many updates.
    checkpoint_every: int = 2
    keep_checkpoints: int = 2
    # Greedy evaluation before and after, per family.
    eval_prompts_per_family: int = 8
    eval_max_new_tokens: int = 64
    eval_max_tool_turns: int = 2

    def __post_init__(self) -> None:
        unknown = sorted(set(self.families) - set(ENVIRONMENT_FAMILIES))
        if unknown or not self.families:
            raise ConfigError(f"kpop_rl.families: need families of {ENVIRONMENT_FAMILIES}, got {self.families}")
        positive = {
            "steps": self.steps,
            "batch_groups": self.batch_groups,
            "chunk_tokens": self.chunk_tokens,
            "rollout_workers": self.rollout_workers,
            "max_concurrent_groups": self.max_concurrent_groups,
            "env_workers": self.env_workers,
            "max_new_tokens": self.max_new_tokens,
            "updates_per_step": self.updates_per_step,
            "curriculum_probe_prompts": self.curriculum_probe_prompts,
            "curriculum_probe_samples": self.curriculum_probe_samples,
            "prompts_per_family": self.prompts_per_family,
            "checkpoint_every": self.checkpoint_every,
            "keep_checkpoints": self.keep_checkpoints,
            "eval_prompts_per_family": self.eval_prompts_per_family,
            "eval_max_new_tokens": self.eval_max_new_tokens,
        }
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"kpop_rl.{name} must be >= 1, got {value}")
        if self.samples_per_prompt < 2:
            raise ConfigError("kpop_rl.samples_per_prompt must be >= 2 (group-normalised advantages need a group)")
        if self.max_staleness < 0 or self.max_tool_turns < 0 or self.eval_max_tool_turns < 0:
            raise ConfigError("kpop_rl: max_staleness, max_tool_turns and eval_max_tool_turns must be >= 0")
        if self.step_token_budget is not None and self.step_token_budget < 1:
            raise ConfigError(f"kpop_rl.step_token_budget must be null or >= 1, got {self.step_token_budget}")
        if not 0.0 <= self.curriculum_pass_low <= self.curriculum_pass_high <= 1.0:
            raise ConfigError("kpop_rl: need 0 <= curriculum_pass_low <= curriculum_pass_high <= 1")
        if not (0.0 < self.clip_low < 1.0 and self.clip_high > 0.0):
            raise ConfigError(
                f"kpop_rl: need 0 < clip_low < 1 and clip_high > 0, got {self.clip_low}, {self.clip_high}"
            )
        if self.lr <= 0 or self.temperature <= 0 or self.sync_timeout_s <= 0:
            raise ConfigError("kpop_rl: lr, temperature and sync_timeout_s must be > 0")
        if self.repetition_penalty < 0 or not 0 < self.repetition_tau <= 1:
            raise ConfigError("kpop_rl: need repetition_penalty >= 0 and 0 < repetition_tau <= 1")

    @property
    def reward_range(self) -> tuple[float, float]:
        """Every reward lies here: 0/1 correctness minus at most ``repetition_penalty`` (the contract's bound)."""
        return -self.repetition_penalty, 1.0


def scale_kpop_rl() -> KPopRLConfig:
    """The papers' values for the large profiles (METHODS §4.1, §7.2, §7.3): 480 prompts × 8 rollouts per
    update, η = 2, lr 2e-6, long agentic rollouts, cold-start pass-rate band 0.1-0.9."""
    return KPopRLConfig(
        steps=500,
        batch_groups=480,
        samples_per_prompt=8,
        max_staleness=2,
        step_token_budget=480 * 8 * 8192 // 2,
        chunk_tokens=1024,
        rollout_workers=64,
        max_concurrent_groups=1024,
        env_workers=1024,
        max_new_tokens=32768,
        max_tool_turns=200,
        lr=2e-6,
        curriculum_probe_prompts=5000,
        curriculum_probe_samples=8,
        prompts_per_family=2500,
        checkpoint_every=10,
        keep_checkpoints=3,
        eval_prompts_per_family=500,
        eval_max_new_tokens=32768,
        eval_max_tool_turns=500,
    )
