"""The migration stage's config (METHODS §3.1, §3.3). Defaults are the tiny profile: ~300 optimizer steps of
32 x 128 tokens in all, split over the phases roughly as §3.3 splits the post-conversion budget, with the
migration phases given a larger share than the paper's 4 % because a toy needs some tens of steps to recover.

    phase                   trains (model.migration.freeze)                  default steps / peak lr / warmup
    linear_warmup   (2)     Lightning W_qkv + QK-Norm                        40 / 3e-3 / 10
    partial_training (3b)   + g_proj, g_norm, GQA W_qkv                      20 / 1e-3 / 5
    mla_warmup      (4)     the MLA projections TransMLA built               40 / 3e-3 / 10
    continued_pretraining   everything (WSM: constant lr, merge last k)     200 / 1e-3 / 4  (2 % of the stage)
    context_extension       everything, YaRN on MLA rope, u = 1e-4          60 x 4 x 1024 / 5e-4 / 5
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
class ExtensionStageConfig:
    """One context-extension stage: windows of ``seq_len`` tokens, YaRN factor seq_len / the pre-trained context."""

    seq_len: int
    steps: int
    lr: float
    warmup_steps: int = 0
    # Share of each batch's rows that are long documents (curated corpus windows of seq_len); the rest are
    # retrieval haystacks. The paper's first 32K stage keeps 20 % of its sequences long (METHODS §3.1).
    long_document_fraction: float = 0.75
    micro_batch_size: int = 4

    def __post_init__(self) -> None:
        if min(self.seq_len, self.micro_batch_size) < 1 or self.steps < 0 or self.warmup_steps < 0:
            raise ConfigError(f"migrate.context_extension stage: seq_len, micro_batch_size >= 1, steps >= 0: {self}")
        if self.lr <= 0 or not 0.0 <= self.long_document_fraction <= 1.0:
            raise ConfigError(f"migrate.context_extension stage: lr > 0, long_document_fraction in [0, 1]: {self}")


@config
class ContextExtensionConfig:
    """Mid-training at longer contexts after continued pre-training (METHODS §3.1): the stages in order, each
    YaRN-scaling the MLA rotary part to its length, on long documents + synthetic pass-key haystacks (built by
    the curation stage, ``corpus.haystack``), with the lower expert-bias update rate of mid-training (§1.2)."""

    # Tiny: 8x the pre-training context (128 -> 1024) in 60 steps of 4 windows, in the make-run budget.
    stages: tuple[ExtensionStageConfig, ...] = (ExtensionStageConfig(seq_len=1024, steps=60, lr=5e-4, warmup_steps=5),)
    # u of the aux-loss-free expert-bias update during extension: 1e-4 after 1e-3 (METHODS §1.2, S1 §2.3.1).
    router_bias_update_rate: float = 1e-4
    # YaRN ramp (alpha = beta_slow, beta = beta_fast turns over the original context) and temperature split.
    yarn_beta_fast: float = 32.0
    yarn_beta_slow: float = 1.0
    yarn_mscale: float = 1.0
    yarn_mscale_all_dim: float = 1.0
    # Training haystacks the curation stage writes (haystack.parquet): lengths are drawn up to the longest stage.
    train_haystacks: int = 256
    # Retrieval measured before and after extension on the same prompts (evals.long_context).
    retrieval_lengths: tuple[int, ...] = (128, 256, 512, 1024)
    retrieval_depths: tuple[float, ...] = (0.0, 0.5, 1.0)
    retrieval_samples_per_cell: int = 4

    def __post_init__(self) -> None:
        lengths = [stage.seq_len for stage in self.stages]
        if lengths != sorted(lengths):
            raise ConfigError(f"migrate.context_extension.stages must not shorten the context, got {lengths}")
        if self.router_bias_update_rate < 0 or self.train_haystacks < 0 or self.retrieval_samples_per_cell < 1:
            raise ConfigError("migrate.context_extension: router_bias_update_rate, train_haystacks >= 0; samples >= 1")
        if self.yarn_beta_fast <= self.yarn_beta_slow:
            raise ConfigError("migrate.context_extension: yarn_beta_fast must exceed yarn_beta_slow")
        if not self.retrieval_lengths or min(self.retrieval_lengths) < 1:
            raise ConfigError("migrate.context_extension.retrieval_lengths must be positive token counts")
        if any(not 0.0 <= d <= 1.0 for d in self.retrieval_depths) or not self.retrieval_depths:
            raise ConfigError("migrate.context_extension.retrieval_depths must lie in [0, 1]")

    @property
    def max_seq_len(self) -> int:
        return max((stage.seq_len for stage in self.stages), default=0)


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
    # After the gate's continued pre-training: mid-training at longer contexts (no stages: no extension).
    context_extension: ContextExtensionConfig = ContextExtensionConfig()

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
