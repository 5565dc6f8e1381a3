"""The migration stage's config (METHODS §3.1, §3.3). Defaults are the tiny profile: ~300 optimizer steps of
32 x 128 tokens in all, split over the phases roughly as §3.3 splits the post-conversion budget, with the
migration phases given a larger share than the paper's 4 % because a toy needs some tens of steps to recover.

    phase                   trains (model.migration.freeze)                  default steps / peak lr / warmup
    linear_warmup   (2)     Lightning W_qkv + QK-Norm                        40 / 3e-3 / 10
    partial_training (3b)   + g_proj, g_norm, GQA W_qkv                      20 / 1e-3 / 5
    mla_warmup      (4)     the MLA projections TransMLA built               40 / 3e-3 / 10
    continued_pretraining   everything (WSM: constant lr, merge last k)     200 / 1e-3 / 4  (2 % of the stage)
"""

from __future__ import annotations

from typing import Literal

from configs.base import ConfigError, config
from configs.training import EngineConfig


@config
class MigratePhaseConfig:
    """One training phase: optimizer steps (0 skips the phase's training), peak lr, linear lr warmup steps."""

    steps: int
    lr: float
    warmup_steps: int = 0

    def __post_init__(self) -> None:
        if self.steps < 0 or self.warmup_steps < 0:
            raise ConfigError(f"migrate phase steps and warmup_steps must be >= 0, got {self}")
        if self.lr <= 0:
            raise ConfigError(f"migrate phase lr must be positive, got {self.lr}")


@config
class MigrateConfig:
    engine: EngineConfig = EngineConfig()
    linear_warmup: MigratePhaseConfig = MigratePhaseConfig(steps=40, lr=3e-3, warmup_steps=10)
    partial_training: MigratePhaseConfig = MigratePhaseConfig(steps=20, lr=1e-3, warmup_steps=5)
    mla_warmup: MigratePhaseConfig = MigratePhaseConfig(steps=40, lr=3e-3, warmup_steps=10)
    continued_pretraining: MigratePhaseConfig = MigratePhaseConfig(steps=200, lr=1e-3, warmup_steps=4)
    # Step 1: how the G key/value heads fill the H Lightning head slots (model.migration.expand).
    kv_init: Literal["replicate", "first_of_group"] = "replicate"
    # Step 3c: the basis of the low-rank query factorisation (model.migration.transmla).
    q_basis: Literal["activations", "weights"] = "activations"
    # Windows of seq_len tokens from the train split that steps 3a and 3c calibrate on.
    calibration_windows: int = 32
    # Non-overlapping held-out windows every measurement (loss, KL vs base) and the gate use; 128 = the windows
    # the pre-training stage reports its held-out loss on (pretrain.eval.heldout_windows), so the numbers agree.
    heldout_windows: int = 128
    # Gate: after continued pre-training, held-out loss <= base held-out loss + this margin (nats).
    parity_margin_nats: float = 0.05
    # Every phase trains on micro_batch_size x grad_accum_steps windows of seq_len tokens per rank and step.
    micro_batch_size: int = 32
    grad_accum_steps: int = 1
    seq_len: int = 128
    # AdamW of every phase (each phase starts a fresh optimizer; its lr and warmup are the phase's own).
    betas: tuple[float, float] = (0.9, 0.95)
    adam_eps: float = 1e-8
    weight_decay: float = 0.1
    # 0: WSM, constant after warmup (the paper's); in (0, 1): cosine down to this fraction of the peak.
    min_lr_ratio: float = 0.0
    # Continued pre-training ends on the mean of its last k checkpoints (WSM), as pre-training does.
    merge_last_k: int = 4
    log_every: int = 10
    checkpoint_every: int = 25
    keep_checkpoints: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        sizes = (
            self.calibration_windows,
            self.heldout_windows,
            self.micro_batch_size,
            self.grad_accum_steps,
            self.seq_len,
        )
        if min(sizes) < 1:
            raise ConfigError(
                "migrate: calibration_windows, heldout_windows, micro_batch_size, grad_accum_steps, seq_len must be >= 1"
            )
        if not 0.0 <= self.min_lr_ratio < 1.0:
            raise ConfigError(f"migrate.min_lr_ratio must lie in [0, 1), got {self.min_lr_ratio}")
        if min(self.merge_last_k, self.log_every, self.checkpoint_every) < 1:
            raise ConfigError("migrate: merge_last_k, log_every, checkpoint_every must be >= 1")
        if self.keep_checkpoints < self.merge_last_k:
            raise ConfigError(
                f"migrate: keep_checkpoints ({self.keep_checkpoints}) < merge_last_k ({self.merge_last_k}) "
                "would merge fewer checkpoints than configured"
            )
