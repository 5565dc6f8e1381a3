"""The whole-run config: one section per component, and the scale profiles as named functions.

Profiles differ only in values; the code path is the same from ``tiny_cpu`` to ``ling26_1t``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from configs.base import (
    ConfigError,
    apply_overrides,
    config,
    load_yaml,
    parse_overrides,
    schema_fingerprint,
)
from configs.data import CurateConfig, EnvironmentsConfig
from configs.distill import DistillConfig
from configs.evaluation import EvaluateConfig, scale_evaluate
from configs.migrate import MigrateConfig
from configs.model import ModelConfig, ling26_1t_model, ling26_flash_model, small_gpu_model, tiny_model
from configs.publish import PublishConfig
from configs.rl import KPopRLConfig, scale_kpop_rl
from configs.training import PostTrainConfig, PretrainConfig


@config
class LineageConfig:
    experiment: str = "ling26-pipeline"
    # None => the embedded store under the repo (sqlite + artifact folder in .ling26/); MLFLOW_TRACKING_URI wins.
    tracking_uri: str | None = None
    # The MLflow Model Registry name the publish stage registers each release under.
    registered_model: str = "ling26-tiny"
    dvc: bool = True


@config
class PipelineConfig:
    profile: str = "tiny_cpu"
    seed: int = 1234
    environments: EnvironmentsConfig = EnvironmentsConfig()
    curate: CurateConfig = CurateConfig()
    model: ModelConfig = ModelConfig()
    pretrain: PretrainConfig = PretrainConfig()
    migrate: MigrateConfig = MigrateConfig()
    post_train: PostTrainConfig = PostTrainConfig()
    kpop_rl: KPopRLConfig = KPopRLConfig()
    distill: DistillConfig = DistillConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    publish: PublishConfig = PublishConfig()
    lineage: LineageConfig = LineageConfig()

    def __post_init__(self) -> None:
        for name, seq_len in (
            ("pretrain.loop.seq_len", self.pretrain.loop.seq_len),
            ("migrate.seq_len", self.migrate.seq_len),
        ):
            if seq_len > self.model.max_position_embeddings:
                raise ConfigError(f"{name} ({seq_len}) exceeds model.max_position_embeddings")
        if self.curate.vocab_size != self.model.vocab_size:
            raise ConfigError(
                f"curate.vocab_size ({self.curate.vocab_size}) must equal model.vocab_size "
                f"({self.model.vocab_size}): the tokenizer the curation stage trains is the model's"
            )


def tiny_cpu() -> PipelineConfig:
    """The embedded default: the whole recipe on one 2-core CPU box in minutes."""
    model = tiny_model()
    return PipelineConfig(
        profile="tiny_cpu",
        model=model,
        curate=CurateConfig(vocab_size=model.vocab_size),
    )


def small_gpu() -> PipelineConfig:
    model = small_gpu_model()
    return PipelineConfig(
        profile="small_gpu",
        model=model,
        environments=EnvironmentsConfig(
            max_difficulty=5, sft_prompts_per_family=20000, rl_prompts_per_family=2000, eval_prompts_per_family=500
        ),
        curate=CurateConfig(
            vocab_size=model.vocab_size,
            stdlib_max_files=100000,
            seq_len=2048,
            shard_tokens=16_777_216,
            env_pretrain_prompts_per_family=50000,
        ),
        publish=PublishConfig(repo_id="ling26/ling26-small"),
        lineage=LineageConfig(registered_model="ling26-small"),
    )


def _paper_scale(name: str, model: ModelConfig) -> PipelineConfig:
    return PipelineConfig(
        profile=name,
        model=model,
        environments=EnvironmentsConfig(
            max_difficulty=5,
            sft_prompts_per_family=1_000_000,
            rl_prompts_per_family=100_000,
            eval_prompts_per_family=2000,
            responses_per_prompt=8,
        ),
        curate=CurateConfig(
            vocab_size=model.vocab_size,
            stdlib_max_files=1_000_000,
            seq_len=4096,
            shard_tokens=268_435_456,
            max_doc_chars=1_000_000,
            decontam_ngram=13,
            minhash_permutations=128,
            minhash_bands=32,
            env_pretrain_prompts_per_family=1_000_000,
        ),
        kpop_rl=scale_kpop_rl(),
        evaluate=scale_evaluate(),
        publish=PublishConfig(repo_id=f"ling26/{name.replace('_', '-')}"),
        lineage=LineageConfig(registered_model=name.replace("_", "-")),
    )


def ling26_flash() -> PipelineConfig:
    return _paper_scale("ling26_flash", ling26_flash_model())


def ling26_1t() -> PipelineConfig:
    return _paper_scale("ling26_1t", ling26_1t_model())


PROFILES: dict[str, Callable[[], PipelineConfig]] = {
    "tiny_cpu": tiny_cpu,
    "small_gpu": small_gpu,
    "ling26_flash": ling26_flash,
    "ling26_1t": ling26_1t,
}


def resolve(
    profile: str = "tiny_cpu",
    overrides: str | Mapping[str, Any] | None = None,
    config_file: str | None = None,
) -> PipelineConfig:
    """Profile, then a YAML file (whole or partial config), then dotted overrides; validated at each step."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r} (known: {', '.join(PROFILES)})")
    cfg = PROFILES[profile]()
    if config_file:
        cfg = apply_overrides(cfg, parse_overrides(load_yaml(config_file)))
    return apply_overrides(cfg, parse_overrides(overrides))


def cache_version() -> str:
    """Flyte ``cache_version`` for every stage: bumps itself when the config schema changes.

    Config values are task inputs and so part of Flyte's cache key already; the schema fingerprint
    covers what the values cannot (a new field with a default changes behaviour without changing inputs).
    """
    return f"schema-{schema_fingerprint(PipelineConfig)}"


__all__ = [
    "PROFILES",
    "LineageConfig",
    "PipelineConfig",
    "cache_version",
    "ling26_1t",
    "ling26_flash",
    "resolve",
    "small_gpu",
    "tiny_cpu",
]
