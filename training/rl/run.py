"""The KPop RL stage as a plain function (issue 12): the post-trained hybrid trained by asynchronous RL over
the agentic families mixed in one run, rollouts from a lower-precision copy of the policy, the behaviour
weight corrected by KPop (or the configured method), evaluated per family before and after.

Pieces: ``curriculum`` (prompts by pass rate), ``scheduler.AsyncRLScheduler`` (rollout workers, token budget,
staleness bound, lossless resume), the native engine behind ``inference.weight_sync`` (in-process pushes,
checksummed), ``contracted.ContractedTrainer`` (rollout contract, decoupled PPO, token log),
``mismatch_report`` (the engine-vs-trainer report).

Outputs under ``out_dir``:
  checkpoint/               the RL-trained hybrid, official layout + tokenizer (loads like post_train's)
  eval_summary.parquet      EvalResult rows, checkpoint "before" / "after", the agentic families
  rollouts.parquet          every trained rollout (RolloutRow contract)
  quarantine.parquet        rollout records that broke the contract, with the rule
  mismatch_tokens.parquet   every trained token: engine and trainer log-probs, version, staleness
  mismatch_summary.json     masked fraction overall and by p_infer bucket, mean |Δ log p|, K3 KL, per method
  curriculum.parquet        the probed prompts: pass rate, band, chosen
  steps.parquet             per-update metrics (reward, loss, mismatch, staleness, per family)
  versions.json             the weight-sync registry: policy version -> checksum of the pushed weights
  metrics.json              the returned metrics
A run killed part-way leaves ``resume/`` (the scheduler's checkpoints); the next run with the same config and
base continues from it, and a finished run removes it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from configs import PipelineConfig, config_hash
from configs.rl import KPopRLConfig

logger = logging.getLogger(__name__)
OnLog = Callable[[str, int, Mapping[str, float]], None]
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
RESUME = "resume"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def correction_config(rl: KPopRLConfig):
    from training.objectives.mismatch import MismatchConfig

    return MismatchConfig(
        method=rl.correction,
        weighted=rl.correction_weighted,
        kpop_phi=rl.kpop_phi,
        kpop_direction=rl.kpop_direction,
        icepop_low=rl.icepop_low,
        icepop_high=rl.icepop_high,
        tis_cap=rl.tis_cap,
        mis_cap=rl.mis_cap,
        mis_min=rl.mis_min,
        mis_unit=rl.mis_unit,
    )


def scheduler_config(rl: KPopRLConfig, seed: int):
    from training.rl.scheduler import SchedulerConfig

    return SchedulerConfig(
        max_staleness=rl.max_staleness,
        batch_groups=rl.batch_groups,
        samples_per_prompt=rl.samples_per_prompt,
        max_concurrent_groups=rl.max_concurrent_groups,
        step_token_budget=rl.step_token_budget,
        rollout_workers=rl.rollout_workers,
        temperature=rl.temperature,
        max_new_tokens=rl.max_new_tokens,
        chunk_tokens=rl.chunk_tokens,
        max_turns=rl.max_tool_turns,
        seed=seed,
        checkpoint_every=rl.checkpoint_every,
        keep_checkpoints=rl.keep_checkpoints,
    )


def agentic_environments(cfg: PipelineConfig) -> dict[str, Any]:
    from environments import all_environments

    missing = sorted(set(cfg.kpop_rl.families) - set(cfg.environments.families))
    if missing:
        raise ValueError(f"kpop_rl.families {missing} are not in environments.families {cfg.environments.families}")
    envs = all_environments(cfg.environments)
    return {family: envs[family] for family in cfg.kpop_rl.families}


def native_engine(model: torch.nn.Module, tokenizer: Any):
    from corpus.tokenizer import EOS, PAD
    from inference.native import NativeEngine

    return NativeEngine(model, tokenizer, eos_id=tokenizer.token_to_id(EOS), pad_id=tokenizer.token_to_id(PAD))


def evaluate(model, tokenizer, envs, tasks: Sequence[Any], rl: KPopRLConfig, checkpoint: str) -> pd.DataFrame:
    from evals.harness import evaluate_policy
    from inference.sampling import SamplingParams

    summary, _ = evaluate_policy(
        native_engine(model, tokenizer),
        envs,
        tasks,
        checkpoint=checkpoint,
        params=SamplingParams(temperature=0.0, max_new_tokens=rl.eval_max_new_tokens),
        max_turns=rl.eval_max_tool_turns,
    )
    return summary


def eval_metrics(summary: pd.DataFrame) -> dict[str, float]:
    out = {}
    for row in summary.itertuples():
        out[f"eval.{row.checkpoint}.{row.family}.accuracy"] = float(row.accuracy)
        out[f"eval.{row.checkpoint}.{row.family}.mean_tokens"] = float(row.mean_tokens)
    return out


def _run_key(cfg: PipelineConfig, base: Path) -> str:
    """What a resumable state belongs to: this config and these base weights."""
    digest = hashlib.sha256(config_hash(cfg).encode())
    for path in sorted(p for p in (base / "checkpoint").rglob("*") if p.is_file()):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _resume_dir(out_dir: Path, key: str) -> Path:
    """``out_dir/resume``, emptied unless it holds a state of this very run (same key)."""
    folder = out_dir / RESUME
    key_file = folder / "run_key.txt"
    if folder.exists() and (not key_file.exists() or key_file.read_text() != key):
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key_file.write_text(key)
    return folder


def choose_prompts(policy, tokenizer, envs, curated: Path, rl: KPopRLConfig, seed: int, resume_dir: Path):
    """The curriculum's prompts and its table; a resumed run reads the table it chose them with."""
    from evals.tasks import select_eval_tasks, tasks_from_frame
    from inference.sampling import SamplingParams
    from training.rl.curriculum import probe_pass_rates, select_prompts

    frame = pd.read_parquet(curated / "rl_prompts.parquet")
    frame = frame[frame["family"].isin(list(envs))]
    saved = resume_dir / "curriculum.parquet"
    if saved.exists():
        table = pd.read_parquet(saved)
        by_id = {t.task_id: t for t in tasks_from_frame(frame)}
        return [by_id[i] for i in table.loc[table["chosen"], "prompt_id"]], table
    probe = select_eval_tasks(frame, rl.curriculum_probe_prompts)
    params = SamplingParams(temperature=rl.temperature, max_new_tokens=rl.max_new_tokens, seed=seed)
    rates = probe_pass_rates(
        native_engine(policy, tokenizer),
        envs,
        probe,
        samples=rl.curriculum_probe_samples,
        params=params,
        max_turns=rl.max_tool_turns,
    )
    chosen, table = select_prompts(
        probe,
        rates,
        per_family=rl.prompts_per_family,
        low=rl.curriculum_pass_low,
        high=rl.curriculum_pass_high,
    )
    # The chosen order matters (the prompt stream shuffles it): kept as a column for the resumed run.
    order = {t.task_id: i for i, t in enumerate(chosen)}
    table["chosen_order"] = table["prompt_id"].map(order).fillna(-1).astype("int64")
    table = table.sort_values(["chosen", "chosen_order"], ascending=[False, True], kind="stable")
    table.to_parquet(saved, index=False)
    return chosen, table


def run_kpop_rl(
    cfg: PipelineConfig, curated: Path, base: Path, out_dir: Path, *, on_log: OnLog | None = None
) -> dict[str, Any]:
    from corpus.tokenizer import PAD, load_tokenizer
    from data_contracts.rollouts import TABLE
    from evals.tasks import eval_tasks
    from inference.weight_sync import InProcessBackend, VersionedEngine, WeightSync
    from kernels.dispatch import place
    from model import export_checkpoint, load_checkpoint
    from training.objectives.policy_gradient import PolicyLossConfig
    from training.rl.contracted import ContractedTrainer
    from training.rl.curriculum import family_report, repetition_reward
    from training.rl.environment import EnvironmentPool
    from training.rl.mismatch_report import flat_metrics, summarise
    from training.rl.scheduler import AsyncRLScheduler
    from training.rl.trainer import DecoupledPPOTrainer

    rl = cfg.kpop_rl
    torch.manual_seed(cfg.seed)
    out_dir.mkdir(parents=True, exist_ok=True)

    def log(name: str, step: int, metrics: Mapping[str, float]) -> None:
        shown = {k: round(v, 4) for k, v in metrics.items() if "." not in k or k.endswith(".all.accuracy")}
        logger.info("%s %d %s", name, step, shown)
        if on_log is not None:
            on_log(name, step, metrics)

    envs = agentic_environments(cfg)
    tokenizer = load_tokenizer(curated / "tokenizer")
    # The one device decision; the rollout copy, the optimizer and the trainer's batches follow the policy.
    policy = place(load_checkpoint(base / "checkpoint", base=cfg.model))
    eval_set = [t for t in eval_tasks(curated, rl.eval_prompts_per_family) if t.family in envs]
    before = evaluate(policy, tokenizer, envs, eval_set, rl, "before")
    metrics: dict[str, Any] = eval_metrics(before)
    log("eval", 0, eval_metrics(before))

    resume_dir = _resume_dir(out_dir, _run_key(cfg, base))
    tasks, curriculum = choose_prompts(policy, tokenizer, envs, curated, rl, cfg.seed, resume_dir)
    metrics.update(family_report(curriculum))

    engine_model = copy.deepcopy(policy).to(DTYPES[rl.rollout_precision]).eval()
    engine = VersionedEngine(native_engine(engine_model, tokenizer))
    correction = correction_config(rl)
    inner = DecoupledPPOTrainer(
        policy,
        torch.optim.AdamW(policy.parameters(), lr=rl.lr, betas=rl.betas, weight_decay=rl.weight_decay),
        forward=lambda ids_BT, attn_BT: policy(ids_BT, attention_mask=attn_BT).logits,
        pad_id=tokenizer.token_to_id(PAD),
        loss_cfg=PolicyLossConfig(level=rl.loss_level, eps_low=rl.clip_low, eps_high=rl.clip_high),
        correction=correction,
        updates_per_step=rl.updates_per_step,
        max_grad_norm=rl.max_grad_norm,
    )
    engine_dtypes = {name: tensor.dtype for name, tensor in engine_model.state_dict().items()}
    trainer = ContractedTrainer(inner, reward_range=rl.reward_range, engine_dtypes=engine_dtypes, tokenizer=tokenizer)
    sync = WeightSync(engine, InProcessBackend(engine_model), timeout_s=rl.sync_timeout_s)
    scheduler = AsyncRLScheduler(
        scheduler_config(rl, cfg.seed),
        tasks=tasks,
        engine=engine,
        sync=sync,
        envs=EnvironmentPool(envs, max_workers=rl.env_workers, seed=cfg.seed),
        trainer=trainer,
        reward_fn=repetition_reward(rl.repetition_penalty, rl.repetition_tau),
        checkpoint_dir=resume_dir / "checkpoints",
    )
    try:
        history = scheduler.run(rl.steps)
    finally:
        scheduler.envs.shutdown()
    for entry in history:
        log("rl", int(entry["step"]), entry)
    steps = pd.DataFrame(history)
    steps.to_parquet(out_dir / "steps.parquet", index=False)

    after = evaluate(policy, tokenizer, envs, eval_set, rl, "after")
    metrics.update(eval_metrics(after))
    log("eval", rl.steps, eval_metrics(after))
    pd.concat([before, after], ignore_index=True).to_parquet(out_dir / "eval_summary.parquet", index=False)

    rollouts = trainer.rollouts()
    rollouts.kept.to_parquet(out_dir / "rollouts.parquet", index=False)
    trainer.ledger.frame().to_parquet(out_dir / "quarantine.parquet", index=False)
    metrics["contracts"] = {
        TABLE: {
            "rows_in": rollouts.rows_in,
            "rows_kept": len(rollouts.kept),
            "rows_quarantined": rollouts.rows_quarantined,
            "quarantined_by_rule": dict(rollouts.quarantined_by_rule),
        }
    }
    tokens = trainer.tokens.frame()
    tokens.to_parquet(out_dir / "mismatch_tokens.parquet", index=False)
    summary = summarise(tokens, correction)
    (out_dir / "mismatch_summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    metrics.update(flat_metrics(summary))
    curriculum.to_parquet(out_dir / "curriculum.parquet", index=False)
    registry = {str(v): c for v, c in sorted(sync.registry.items())}
    (out_dir / "versions.json").write_text(json.dumps(registry, indent=2) + "\n")

    metrics.update(_run_metrics(steps, rollouts.kept, scheduler, registry))
    checkpoint = out_dir / "checkpoint"
    if checkpoint.exists():
        shutil.rmtree(checkpoint)
    export_checkpoint(policy.eval(), checkpoint)
    for name in TOKENIZER_FILES:
        shutil.copy(curated / "tokenizer" / name, checkpoint / name)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float) + "\n")
    shutil.rmtree(out_dir / RESUME)
    return metrics


def _run_metrics(steps: pd.DataFrame, rollouts: pd.DataFrame, scheduler: Any, registry: Mapping[str, str]) -> dict:
    """Headline numbers of the RL run itself: reward first/last, staleness, partial rollouts, versions."""
    out = {
        "rl.steps": float(len(steps)),
        "rl.reward_first": float(steps["reward_mean"].iloc[0]),
        "rl.reward_last": float(steps["reward_mean"].iloc[-1]),
        "rl.reward_mean": float(steps["reward_mean"].mean()),
        "rl.max_staleness": float(steps["max_staleness"].max()),
        "rl.partial_rows": float(steps["partial_rows"].sum()),
        "rl.model_tokens": float(steps["model_tokens"].sum()),
        "rl.policy_version": float(scheduler.version),
        "rl.versions_pushed": float(len(registry)),
        "rl.resumed_from": float(scheduler.resumed_from if scheduler.resumed_from is not None else -1),
    }
    for family, part in rollouts.groupby("family", sort=True):
        out[f"rl.{family}.reward"] = float(part["reward"].mean())
        out[f"rl.{family}.accuracy"] = float(part["correct"].mean())
        out[f"rl.{family}.rollouts"] = float(len(part))
    return out
