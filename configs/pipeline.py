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
from configs.cluster import ClusterConfig, paper_cluster, small_gpu_cluster
from configs.data import CurateConfig, EnvironmentsConfig
from configs.distill import DistillConfig
from configs.evaluation import EvaluateConfig, scale_evaluate
from configs.migrate import ContextExtensionConfig, ExtensionStageConfig, MigrateConfig, MigratePhaseConfig
from configs.model import ModelConfig, ling26_1t_model, ling26_flash_model, small_gpu_model, tiny_model
from configs.publish import HF_MAX_SHARD_BYTES, PublishConfig
from configs.rl import KPopRLConfig, scale_kpop_rl
from configs.training import (
    EngineConfig,
    OptimConfig,
    PhaseOptimConfig,
    PostTrainConfig,
    PreferencePhaseConfig,
    PretrainConfig,
    RLPhaseConfig,
    RowContractsConfig,
    SFTPhaseConfig,
    TrainLoopConfig,
)


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
    cluster: ClusterConfig = ClusterConfig()

    def __post_init__(self) -> None:
        for name, seq_len in (
            ("pretrain.loop.seq_len", self.pretrain.loop.seq_len),
            ("migrate.seq_len", self.migrate.seq_len),
            ("migrate.context_extension.stages[-1].seq_len", self.migrate.context_extension.max_seq_len),
            ("post_train.sft.seq_len", self.post_train.sft.seq_len),
            ("post_train.contracts.max_pair_tokens", self.post_train.contracts.max_pair_tokens),
            ("post_train.rl.max_new_tokens", self.post_train.rl.max_new_tokens),
            ("post_train.preference.max_new_tokens", self.post_train.preference.max_new_tokens),
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
    """One GPU, hours not weeks: ~4 B pre-training tokens for the ~80 M-active model.

    No paper trains at this size; the pre-training numbers are GPT-3's for its 125 M model (Brown et al. 2020,
    Tab. 2.1: peak lr 6e-4, 0.5 M-token batches), the migration and post-training shapes are the paper's
    proportions (METHODS §3.3) and the cited fine-tuning recipes at this scale.
    """
    model = small_gpu_model()
    # One GPU: ZeRO has nothing to shard; bf16 as every GPU recipe cited here trains.
    engine = EngineConfig(zero_stage=0, precision="bf16")
    # 16 x 16 windows of 2,048 tokens = 0.5 M tokens per step (GPT-3 125 M); 8,000 steps = 4.2 B tokens.
    tokens_per_step = 16 * 16 * 2048
    return PipelineConfig(
        profile="small_gpu",
        model=model,
        environments=EnvironmentsConfig(
            max_difficulty=5, sft_prompts_per_family=20000, rl_prompts_per_family=2000, eval_prompts_per_family=500
        ),
        curate=CurateConfig(
            vocab_size=model.vocab_size,
            stdlib_max_files=100000,
            shard_tokens=16_777_216,
            env_pretrain_prompts_per_family=50000,
        ),
        pretrain=PretrainConfig(
            engine=engine,
            # lr 6e-4: GPT-3 125 M (Tab. 2.1). Warmup 2 % of the run, then constant (WSM; METHODS §3.3).
            # Merge the last 8 of checkpoints 100 steps apart [assumption: between the toy's 4 and Ling's 32].
            optim=OptimConfig(lr=6e-4, warmup_steps=160, merge_last_k=8),
            loop=TrainLoopConfig(
                max_steps=8000,
                micro_batch_size=16,
                grad_accum_steps=16,
                seq_len=2048,
                checkpoint_every=100,
                keep_checkpoints=8,
            ),
        ),
        migrate=_migrate(
            engine,
            # Post-conversion budget = 0.48 x pre-training, the paper's 9.6 T / 20 T [METHODS §3.1, §1.1]: 2.0 B.
            post_conversion_tokens=0.48 * 8000 * tokens_per_step,
            tokens_per_step=tokens_per_step,
            lr=6e-4,
            micro_batch_size=16,
            grad_accum_steps=16,
            seq_len=2048,
            checkpoint_every=100,
            merge_last_k=8,
            # Mid-training at 8x the context, as the tiny profile (METHODS §3.3: x8 then x64; x64 does not fit).
            extension=((16384, 1.0, 0.9),),
        ),
        post_train=PostTrainConfig(
            engine=engine,
            # 2 epochs (Tülu 3 SFT) of 100 K shortest-correct rows of ~300 tokens, packed 32 x 4,096 per step.
            # lr [assumption]: 4x Tülu 3's 5e-6 for 8 B, as pre-training lr grows at this size; 3 % warmup (Tülu 3).
            sft=SFTPhaseConfig(
                steps=500, batch_size=32, seq_len=4096, optim=PhaseOptimConfig(lr=2e-5, warmup_fraction=0.03)
            ),
            # Ring-1T's RL recipe (METHODS §4.1): lr 2e-6, 8 rollouts per prompt; 64 prompts per step fit one GPU.
            rl=RLPhaseConfig(
                steps=200,
                prompts_per_step=64,
                samples_per_prompt=8,
                max_new_tokens=1024,
                optim=PhaseOptimConfig(lr=2e-6),
            ),
            # DPO: lr 5e-7 and 10 % warmup (Tülu 3 8 B DPO; Zephyr's 5e-7), beta 0.1 (Zephyr; our loss sums
            # log-probs, so Tülu 3's length-normalised beta 5 does not apply), 64 prompts x 8 samples per step.
            preference=PreferencePhaseConfig(
                steps=300,
                prompts_per_step=64,
                samples_per_prompt=8,
                max_new_tokens=1024,
                optim=PhaseOptimConfig(lr=5e-7, warmup_fraction=0.1),
            ),
            contracts=RowContractsConfig(max_pair_tokens=2048),
        ),
        publish=PublishConfig(repo_id="ling26/ling26-small", max_shard_bytes=HF_MAX_SHARD_BYTES),
        lineage=LineageConfig(registered_model="ling26-small"),
        cluster=small_gpu_cluster(),
    )


def _migrate(
    engine: EngineConfig,
    *,
    post_conversion_tokens: float,
    tokens_per_step: int,
    lr: float,
    micro_batch_size: int,
    grad_accum_steps: int,
    seq_len: int,
    checkpoint_every: int,
    merge_last_k: int,
    extension: tuple[tuple[int, float, float], ...],
) -> MigrateConfig:
    """Migration at scale: the paper's split of the post-conversion budget (METHODS §3.3: Lightning conversion +
    linear warmup 1.5 %, QK-norm fusion + partial training 0.5 %, MLA conversion + warmup 2 %, continued
    pre-training 83 %, mid-training 12.5 % as context extension), each phase warming up over 2 % of its steps
    (§3.3) to the base's peak lr, kept through continued pre-training and mid-training ("peak LR kept", §3.1).

    ``extension``: (length, share of the mid-training tokens, long-document fraction) per stage. A stage's steps
    keep the global batch's sequence count (1 sequence per rank and micro-step), so a step at 8x the length
    carries 8x the tokens."""

    def phase(share: float) -> MigratePhaseConfig:
        steps = round(share * post_conversion_tokens / tokens_per_step)
        return MigratePhaseConfig(steps=steps, lr=lr, warmup_steps=max(1, round(0.02 * steps)))

    def stage(length: int, share: float, long_fraction: float) -> ExtensionStageConfig:
        steps = round(share * 0.125 * post_conversion_tokens / (tokens_per_step * length / seq_len))
        return ExtensionStageConfig(seq_len=length, steps=steps, lr=lr, warmup_steps=max(1, round(0.02 * steps)),
                                    long_document_fraction=long_fraction, micro_batch_size=micro_batch_size)  # fmt: skip

    lengths = tuple(length for length, _, _ in extension)
    context_extension = ContextExtensionConfig(
        stages=tuple(stage(*s) for s in extension),
        # Pass-key haystacks drawn with replacement by every step [assumption: the paper states no count; the
        # generator tokenises sentence by sentence, so curation caps what it builds at a long context].
        train_haystacks=20_000,
        # The trained context, each extension length, and twice the last (beyond it, reported even at zero).
        retrieval_lengths=tuple(sorted({seq_len, *lengths, 2 * lengths[-1]})),
        retrieval_samples_per_cell=8,
    )
    return MigrateConfig(
        engine=engine,
        linear_warmup=phase(0.015),
        partial_training=phase(0.005),
        mla_warmup=phase(0.02),
        continued_pretraining=phase(0.83),
        micro_batch_size=micro_batch_size,
        grad_accum_steps=grad_accum_steps,
        seq_len=seq_len,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=merge_last_k,
        merge_last_k=merge_last_k,
        context_extension=context_extension,
    )


def _paper_scale(
    name: str,
    model: ModelConfig,
    *,
    peak_lr: float,
    batch: int,
    sft_lr: float,
    dpo_lr: float,
    cluster: ClusterConfig,
):
    """The paper profiles: Ling 2.0's pre-training recipe for the same-size base (METHODS §1.1, from the Ling 2.0
    report: 20 T tokens at 4K context, WSM with 2,000 warmup steps and top-32 checkpoint merging, per-size peak
    lr and batch), the migration's budget (§3.1, §3.3), and the cited post-training recipes."""
    # The paper trains FP8 blockwise with Megatron parallelism; our engines offer bf16 and DeepSpeed ZeRO, and at
    # 100 B-1 T parameters only ZeRO-3 (parameters sharded too) fits a rank's memory.
    engine = EngineConfig(zero_stage=3, precision="bf16")
    # `batch` sequences of 4,096 tokens per step = 1 sequence x `accum` accumulation steps x the cluster's data ranks.
    tokens_per_step = batch * 4096
    if batch % cluster.data_parallel:
        raise ConfigError(f"{name}: batch {batch} is not a multiple of cluster.data_parallel {cluster.data_parallel}")
    accum = batch // cluster.data_parallel
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
            shard_tokens=268_435_456,
            max_doc_chars=1_000_000,
            decontam_ngram=13,
            minhash_permutations=128,
            minhash_bands=32,
            env_pretrain_prompts_per_family=1_000_000,
        ),
        pretrain=PretrainConfig(
            engine=engine,
            optim=OptimConfig(lr=peak_lr, warmup_steps=2000, merge_last_k=32),
            # 20 T tokens / tokens per step; a checkpoint every 1,000 steps [assumption] for the merge.
            loop=TrainLoopConfig(
                max_steps=round(20e12 / tokens_per_step),
                micro_batch_size=1,
                grad_accum_steps=accum,
                seq_len=4096,
                checkpoint_every=1000,
                keep_checkpoints=32,
            ),
        ),
        migrate=_migrate(
            engine,
            # 0.4 T migration + 8 T continued pre-training + 1.2 T mid-training (METHODS §3.1).
            post_conversion_tokens=9.6e12,
            tokens_per_step=tokens_per_step,
            lr=peak_lr,
            micro_batch_size=1,
            grad_accum_steps=accum,
            seq_len=4096,
            checkpoint_every=1000,
            merge_last_k=32,
            # Mid-training 1.2 T (METHODS §3.1): 250 B at 32K (the paper keeps 20 % of its sequences at 32K there;
            # every row here is 32K), 425 B at 32K, 525 B at 256K. 5 % of rows retrieval haystacks [assumption].
            extension=((32768, 250 / 1200, 0.95), (32768, 425 / 1200, 0.95), (262144, 525 / 1200, 0.95)),
        ),
        post_train=PostTrainConfig(
            engine=engine,
            # SFT: DeepSeek-V3's recipe (2 epochs, cosine from the peak to 1/5 of it) at Tülu 3's warmup ratio 3 %;
            # steps [derived]: 2 epochs of 5 M shortest-correct rows of ~1K tokens, packed 128 x 32,768 per step.
            sft=SFTPhaseConfig(
                steps=2400,
                batch_size=128,
                seq_len=32768,
                optim=PhaseOptimConfig(lr=sft_lr, warmup_fraction=0.03, min_lr_ratio=0.2),
            ),
            # Ring-1T's RL recipe (METHODS §4.1): 480 prompts x 8 rollouts per step, lr 2e-6, temperature 1;
            # 8K new tokens [assumption: the instant model answers without long thinking; 64K is reasoning RL].
            rl=RLPhaseConfig(
                steps=500,
                prompts_per_step=480,
                samples_per_prompt=8,
                max_new_tokens=8192,
                optim=PhaseOptimConfig(lr=2e-6),
            ),
            # DPO: Tülu 3's batch (128) and warmup (10 %); beta 0.1 as Zephyr (summed log-probs); ~1 epoch of
            # Tülu 3's ~270 K pairs = 2,000 steps.
            preference=PreferencePhaseConfig(
                steps=2000,
                prompts_per_step=128,
                samples_per_prompt=8,
                max_new_tokens=8192,
                optim=PhaseOptimConfig(lr=dpo_lr, warmup_fraction=0.1),
            ),
            contracts=RowContractsConfig(max_pair_tokens=16384),
        ),
        kpop_rl=scale_kpop_rl(),
        evaluate=scale_evaluate(),
        publish=PublishConfig(repo_id=f"ling26/{name.replace('_', '-')}", max_shard_bytes=HF_MAX_SHARD_BYTES),
        lineage=LineageConfig(registered_model=name.replace("_", "-")),
        cluster=cluster,
    )


def ling26_flash() -> PipelineConfig:
    # Ling-flash-2.0: peak lr 2.61e-4, batch 8,352 (METHODS §1.1). SFT lr 5e-6 (DeepSeek-V3; Tülu 3 8 B), DPO lr
    # 5e-7 (Tülu 3 8 B, Zephyr).
    # 58 nodes x 8 H100 = 464 ZeRO-3 ranks, accumulation 18 (8,352 = 464 x 18; node counts that divide the batch
    # are 29, 36, 58, 87, 116, ...): 20 T tokens x 6 x 6.1 B active = 7.3e23 FLOPs, ~46 days at 40 % MFU of 989
    # bf16 TFLOP/s [derived, 6N rule; `python -m configs.plan`, counting attention, the head and MTP too, says 52].
    # Post-training on 16 nodes: 16 B/parameter x 100 B / 128 ranks = 12.5 GB of ZeRO-3 state.
    cluster = paper_cluster(accelerator="nvidia-h100", gpu_memory_gib=80, pretrain_nodes=58, post_train_nodes=16)
    return _paper_scale(
        "ling26_flash",
        ling26_flash_model(),
        peak_lr=2.61e-4,
        batch=8352,
        sft_lr=5e-6,
        dpo_lr=5e-7,
        cluster=cluster,
    )


def ling26_1t() -> PipelineConfig:
    # Ling-1T: peak lr 1.86e-4, batch 18,144 (METHODS §1.1). SFT lr 2e-6 and DPO lr 2e-7: Tülu 3's 70 B values,
    # the largest model a cited fine-tuning recipe gives.
    # 252 nodes x 8 H200 (141 GB) = 2,016 ZeRO-3 ranks, accumulation 9 (18,144 = 2,016 x 9): 20 T tokens x 6 x
    # ~50 B active = 6e24 FLOPs, ~87 days at 40 % MFU [derived, 6N rule; the planner says 95]; 16 B x 1 T / 2,016
    # = 7.9 GB of state per GPU.
    # Post-training on 32 nodes: 16 TB / 256 ranks = 62.5 GB of state, the rest of 141 GB for 32K-token activations.
    cluster = paper_cluster(accelerator="nvidia-h200", gpu_memory_gib=141, pretrain_nodes=252, post_train_nodes=32)
    return _paper_scale(
        "ling26_1t",
        ling26_1t_model(),
        peak_lr=1.86e-4,
        batch=18144,
        sft_lr=2e-6,
        dpo_lr=2e-7,
        cluster=cluster,
    )


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
