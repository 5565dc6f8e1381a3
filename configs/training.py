"""Training-engine and loop configs (shared by every stage that trains)."""

from __future__ import annotations

import math
from typing import Literal

from configs.base import ConfigError, config
from configs.data import RESPONSE_MAX_CHARS


@config
class EngineConfig:
    backend: Literal["deepspeed", "torch"] = "deepspeed"
    zero_stage: int = 0
    precision: Literal["fp32", "bf16"] = "fp32"
    offload_optimizer: bool = False
    grad_clip: float = 1.0
    # DeepSpeed's fused CPU Adam needs a C++ build on first use; torch's Adam avoids it on CPU.
    torch_adam: bool = True

    def __post_init__(self) -> None:
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"engine.zero_stage must be 0..3, got {self.zero_stage}")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ConfigError("engine.offload_optimizer needs zero_stage >= 1")


@config
class OptimConfig:
    lr: float = 3e-3
    min_lr_ratio: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    # WSM: linear warmup, then constant; "annealing" is the average of the last `merge_last_k` checkpoints.
    warmup_steps: int = 50
    merge_last_k: int = 4

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError("optim.lr must be positive")
        if self.merge_last_k < 1:
            raise ConfigError("optim.merge_last_k must be >= 1")


@config
class TrainLoopConfig:
    max_steps: int = 400
    micro_batch_size: int = 32
    grad_accum_steps: int = 1
    seq_len: int = 128
    log_every: int = 10
    checkpoint_every: int = 25
    keep_checkpoints: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.max_steps, self.micro_batch_size, self.grad_accum_steps, self.seq_len) < 1:
            raise ConfigError("train loop sizes must be >= 1")
        if self.checkpoint_every < 1:
            raise ConfigError("checkpoint_every must be >= 1")


@config
class EvalConfig:
    """The harness as a stage runs it: how many eval prompts per family, and the decode budget."""

    prompts_per_family: int = 32
    max_new_tokens: int = 96
    max_tool_turns: int = 4
    heldout_windows: int = 128


@config
class PretrainConfig:
    engine: EngineConfig = EngineConfig()
    optim: OptimConfig = OptimConfig()
    loop: TrainLoopConfig = TrainLoopConfig()
    eval: EvalConfig = EvalConfig()
    # Path of an existing Ling-2.0 checkpoint (HF folder) to import instead of training from scratch.
    base_checkpoint: str | None = None


# Rubric dimensions the preference phase can score without a judge model: ``concise`` (length position within
# the prompt's samples) and ``non_redundant`` (1 - the redundancy detector's fraction); see
# ``training.objectives.preference.rubric_matrix``.
RUBRIC_DIMS = ("concise", "non_redundant")


@config
class PhaseOptimConfig:
    """AdamW for one post-training phase. Each phase starts a fresh optimizer: linear warmup over
    ``warmup_fraction`` of the phase's optimizer updates (at least one), then constant (``min_lr_ratio`` 0) or
    cosine down to ``min_lr_ratio`` of the peak. The warmup is a fraction, not a step count, so shortening a
    phase by override keeps its shape."""

    lr: float
    warmup_fraction: float = 0.1
    min_lr_ratio: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    # No decay: a phase is a short fine-tune from a trained model, decay would pull it towards zero.
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError(f"post_train phase optim.lr must be positive, got {self.lr}")
        if not 0.0 <= self.warmup_fraction <= 1.0 or not 0.0 <= self.min_lr_ratio < 1.0:
            raise ConfigError("post_train phase optim: need warmup_fraction in [0, 1] and min_lr_ratio in [0, 1)")

    def warmup_steps(self, updates: int) -> int:
        # floor, with a nudge so that e.g. 0.1 * 30 counts as 3 whatever the float rounding says.
        return max(1, math.floor(updates * self.warmup_fraction + 1e-9))

    def for_updates(self, updates: int) -> OptimConfig:
        """The engine's optimizer config for a phase of ``updates`` optimizer steps."""
        return OptimConfig(
            lr=self.lr,
            min_lr_ratio=self.min_lr_ratio,
            betas=self.betas,
            eps=self.eps,
            weight_decay=self.weight_decay,
            warmup_steps=self.warmup_steps(updates),
        )


@config
class SFTPhaseConfig:
    steps: int = 100
    batch_size: int = 24
    seq_len: int = 192
    optim: PhaseOptimConfig = PhaseOptimConfig(lr=1e-3)
    # "shortest_correct": METHODS §6.2 selection + pruning; "full": the plain full-length SFT rows (baseline).
    data: Literal["shortest_correct", "full"] = "shortest_correct"
    log_every: int = 10
    # A resumable checkpoint every this many steps (and at the last), under the state folder.
    checkpoint_every: int = 25

    def __post_init__(self) -> None:
        if min(self.steps, self.batch_size, self.seq_len, self.log_every, self.checkpoint_every) < 1:
            raise ConfigError("post_train.sft: steps, batch_size, seq_len, log_every and checkpoint_every must be >= 1")


@config
class RLPhaseConfig:
    steps: int = 8
    prompts_per_step: int = 16
    samples_per_prompt: int = 4
    updates_per_batch: int = 2
    temperature: float = 1.0
    max_new_tokens: int = 80
    # Gentle: at 3e-4 a dozen steps on a weak tiny policy collapsed tool use (measured, see BENCHMARKS.md).
    optim: PhaseOptimConfig = PhaseOptimConfig(lr=5e-5)
    # token = GRPO, sentence = LPO, sequence = GSPO (METHODS §5).
    level: Literal["token", "sentence", "sequence"] = "sentence"
    # The clip band [1 - clip_low, 1 + clip_high]; unset, each end takes the level's published value
    # (GRPO 0.2/0.2, LPO 0.03/0.03, GSPO 3e-4/4e-4: training.objectives.policy_gradient.DEFAULT_CLIP), so
    # switching the level alone switches the band. Set both for DAPO's clip-higher (0.2/0.28).
    clip_low: float | None = None
    clip_high: float | None = None
    # Evo-CoT rewards (METHODS §6.1, §6.3; training.objectives.rewards).
    format_penalty: float = 0.5
    redundancy_coef: float = 0.2
    alpha_min: float = 0.1
    # zlib repetition penalty of the agentic specialist (METHODS §6.3); 0 = off for the instant model.
    compression_coef: float = 0.0
    compression_threshold: float = 0.35
    # A resumable checkpoint every this many RL steps (and at the last). Counted in steps, not optimizer
    # updates, so a checkpoint never splits a rollout batch between its updates.
    checkpoint_every: int = 2

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1:
            raise ConfigError(f"post_train.rl.checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.clip_low is not None and not 0.0 < self.clip_low < 1.0:
            raise ConfigError(f"post_train.rl.clip_low must lie in (0, 1), got {self.clip_low}")
        if self.clip_high is not None and self.clip_high <= 0.0:
            raise ConfigError(f"post_train.rl.clip_high must be > 0, got {self.clip_high}")


@config
class PreferencePhaseConfig:
    steps: int = 6
    prompts_per_step: int = 16
    samples_per_prompt: int = 4
    temperature: float = 1.0
    max_new_tokens: int = 80
    # Pairs per prompt and step, most informative rejected side first (format, wrong, redundant, longer).
    max_pairs_per_prompt: int = 1
    # Offset DPO (training.objectives.preference): beta, and the offset per unit of score gap.
    beta: float = 0.1
    margin_scale: float = 1.0
    # Focal rubric weights (METHODS §6.4): w_d ∝ (1 - sat_d)^gamma over these dimensions, sat_d the running mean
    # (this momentum) of on-policy rubric scores. They set each response's score and the training weight of a
    # pair that differs only in one dimension. gamma = 0 keeps the weights uniform (the focal mechanism off).
    rubric_dims: tuple[str, ...] = RUBRIC_DIMS
    focal_gamma: float = 1.0
    focal_momentum: float = 0.9
    optim: PhaseOptimConfig = PhaseOptimConfig(lr=5e-5)
    # A resumable checkpoint every this many optimizer updates (steps that kept pairs; and at the end).
    checkpoint_every: int = 2

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1:
            raise ConfigError(f"post_train.preference.checkpoint_every must be >= 1, got {self.checkpoint_every}")
        unknown = sorted(set(self.rubric_dims) - set(RUBRIC_DIMS))
        if not self.rubric_dims or unknown or len(set(self.rubric_dims)) != len(self.rubric_dims):
            raise ConfigError(
                f"post_train.preference.rubric_dims must be distinct names from {RUBRIC_DIMS}, got {self.rubric_dims}"
            )
        if self.max_pairs_per_prompt < 1:
            raise ConfigError("post_train.preference.max_pairs_per_prompt must be >= 1")
        if self.beta <= 0 or self.margin_scale < 0 or self.focal_gamma < 0 or not 0 <= self.focal_momentum < 1:
            raise ConfigError(
                "post_train.preference: need beta > 0, margin_scale >= 0, focal_gamma >= 0, focal_momentum in [0, 1)"
            )


@config
class RowContractsConfig:
    """Length bounds on the rows post-training learns from (``data_contracts.training_rows``); a row outside
    them is quarantined. An SFT row is also bounded by ``sft.seq_len``: prompt + response + EOS fill at
    most one packed row."""

    max_response_chars: int = RESPONSE_MAX_CHARS
    # Prompt + response tokens of either side of a preference pair: the padded batch is this wide at most.
    max_pair_tokens: int = 512

    def __post_init__(self) -> None:
        # The table contracts cap responses at RESPONSE_MAX_CHARS; the stage may tighten that, not loosen it.
        if not 1 <= self.max_response_chars <= RESPONSE_MAX_CHARS:
            raise ConfigError(f"post_train.contracts.max_response_chars must lie in [1, {RESPONSE_MAX_CHARS}]")
        if self.max_pair_tokens < 2:
            raise ConfigError("post_train.contracts.max_pair_tokens must be >= 2 (a prompt and a response token)")


@config
class PostTrainConfig:
    engine: EngineConfig = EngineConfig()
    sft: SFTPhaseConfig = SFTPhaseConfig()
    rl: RLPhaseConfig = RLPhaseConfig()
    preference: PreferencePhaseConfig = PreferencePhaseConfig()
    contracts: RowContractsConfig = RowContractsConfig()
    # Four evaluations (base, after each phase): fewer prompts each than the pretrain stage's one.
    eval: EvalConfig = EvalConfig(prompts_per_family=16)
    # Complete checkpoints each phase keeps (the newest resumes; older ones only guard against a bad disk).
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if self.keep_checkpoints < 1:
            raise ConfigError(f"post_train.keep_checkpoints must be >= 1, got {self.keep_checkpoints}")
