"""Training-engine and loop configs (shared by every stage that trains)."""

from __future__ import annotations

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


@config
class SFTPhaseConfig:
    steps: int = 100
    batch_size: int = 24
    seq_len: int = 192
    lr: float = 1e-3
    # "shortest_correct": METHODS §6.2 selection + pruning; "full": the plain full-length SFT rows (baseline).
    data: Literal["shortest_correct", "full"] = "shortest_correct"


@config
class RLPhaseConfig:
    steps: int = 8
    prompts_per_step: int = 16
    samples_per_prompt: int = 4
    updates_per_batch: int = 2
    temperature: float = 1.0
    max_new_tokens: int = 80
    # Gentle: at 3e-4 a dozen steps on a weak tiny policy collapsed tool use (measured, see BENCHMARKS.md).
    lr: float = 5e-5
    # token = GRPO, sentence = LPO, sequence = GSPO (METHODS §5); clip eps per level unless set.
    level: Literal["token", "sentence", "sequence"] = "sentence"
    clip_eps: float | None = None
    format_penalty: float = 0.5
    redundancy_coef: float = 0.2
    alpha_min: float = 0.1


@config
class PreferencePhaseConfig:
    steps: int = 6
    prompts_per_step: int = 16
    samples_per_prompt: int = 4
    beta: float = 0.1
    margin_scale: float = 1.0
    lr: float = 5e-5


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
