"""The post-training stage as a plain function: SFT on shortest-correct data -> LPO RL with Evo-CoT
rewards -> bidirectional preference alignment, the model evaluated by the harness after each phase.

Outputs under ``out_dir``:
  checkpoint/               the instant "Ling" model, official layout + tokenizer
  eval_summary.parquet      EvalResult rows of every phase (checkpoint column = phase)
  quarantine.parquet        every SFT row and preference pair that broke its contract, with the rule
  metrics.json              per-phase results, data selection statistics, contract counts, the before/after
                            comparison
Training checkpoints (for resume) live under the state folder, not in DVC: ``<checkpoint_root>/<key>/<phase>``,
the key hashing the config and the base's weights. A rerun after a crash resumes the phase it stopped in from
its newest checkpoint; the phases it had finished load their final checkpoints instead of training again.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from configs import PipelineConfig, config_hash
from data_contracts import QuarantineLedger
from training.post_train.common import eval_metrics, evaluate
from training.post_train.contracts import contract_counts, require_pairs, screen_sft, write_quarantine

logger = logging.getLogger(__name__)
OnLog = Callable[[str, int, Mapping[str, float]], None]
PHASES = ("base", "sft", "rl", "preference")


def post_train_checkpoint_root() -> Path:
    """Where the stage keeps its phases' training checkpoints (for resume): the state folder, not DVC."""
    from lineage.paths import state_dir

    return state_dir() / "checkpoints" / "post_train"


def training_key(cfg: PipelineConfig, digest: str) -> str:
    """Folder name of a run's phase checkpoints: the config and the base's weights decide what every phase
    trains (its data are the curated tables, themselves the config's), so a different base or config never
    resumes another run's phases."""
    return config_hash({"pipeline": cfg, "base": digest})


def run_post_train(
    cfg: PipelineConfig,
    curated: Path,
    base: Path,
    out_dir: Path,
    *,
    on_log: OnLog | None = None,
    checkpoint_root: Path | None = None,
) -> dict[str, Any]:
    """``checkpoint_root`` defaults to :func:`post_train_checkpoint_root`."""
    from training.builder import require_in_place_training

    require_in_place_training(cfg.post_train.engine, "post_train")
    from corpus.tokenizer import load_tokenizer
    from environments import all_environments
    from evals.tasks import eval_tasks, tasks_from_frame
    from kernels.dispatch import place
    from model import export_checkpoint, load_checkpoint
    from training.post_train.phases import preference_phase, rl_phase, sft_phase, sft_rows

    torch.manual_seed(cfg.seed)

    def log(phase: str, step: int, metrics: Mapping[str, float]) -> None:
        shown = {k: round(v, 4) for k, v in metrics.items() if "." not in k or k.endswith(".all.accuracy")}
        logger.info("%s %d %s", phase, step, shown)
        if on_log is not None:
            on_log(phase, step, metrics)

    envs = all_environments(cfg.environments)
    tokenizer = load_tokenizer(curated / "tokenizer")
    model = place(load_checkpoint(base / "checkpoint", base=cfg.model))  # the one device decision
    candidates = pd.read_parquet(curated / "candidates.parquet")
    sft_table = pd.read_parquet(curated / "sft.parquet")
    rl_tasks = tasks_from_frame(pd.read_parquet(curated / "rl_prompts.parquet"))
    eval_set = eval_tasks(curated, cfg.post_train.eval.prompts_per_family)
    sft_tasks = {t.task_id: t for t in tasks_from_frame(pd.read_parquet(curated / "sft_prompts.parquet"))}

    metrics: dict[str, Any] = {}
    summaries = []

    def checkpoint_eval(phase: str) -> None:
        summary, _ = evaluate(model, tokenizer, envs, eval_set, cfg, checkpoint=phase)
        summaries.append(summary)
        flat = eval_metrics(summary, f"eval.{phase}")
        metrics.update(flat)
        log("eval", PHASES.index(phase), flat)

    ledger = QuarantineLedger()
    # Written however the stage ends: when a contract stops it, the quarantined rows say why.
    try:
        # Screened before any evaluation or training, so a broken table fails the stage in seconds.
        rows, metrics["sft_data"] = sft_rows(candidates, sft_table, envs, sft_tasks, cfg.post_train.sft.data)
        sft_data = screen_sft(rows, ledger, cfg, tokenizer)
        screened = [sft_data]
        from training.migrate.run import base_digest

        run_dir = (checkpoint_root or post_train_checkpoint_root()) / training_key(
            cfg, base_digest(base / "checkpoint")
        )
        checkpoint_eval("base")
        metrics["sft"] = sft_phase(model, tokenizer, sft_data.kept, cfg, log, checkpoint_dir=run_dir / "sft")
        checkpoint_eval("sft")
        if cfg.post_train.rl.steps:
            metrics["rl"] = rl_phase(model, tokenizer, envs, rl_tasks, cfg, log, checkpoint_dir=run_dir / "rl")
            checkpoint_eval("rl")
        if cfg.post_train.preference.steps:
            metrics["preference"], pairs = preference_phase(
                model, tokenizer, envs, rl_tasks, cfg, log, ledger, checkpoint_dir=run_dir / "preference"
            )
            require_pairs(pairs)
            screened.append(pairs)
            checkpoint_eval("preference")
    finally:
        write_quarantine(ledger, out_dir)
    metrics["contracts"] = contract_counts(screened)

    table = pd.concat(summaries, ignore_index=True)
    table.to_parquet(out_dir / "eval_summary.parquet", index=False)
    checkpoint = out_dir / "checkpoint"
    if checkpoint.exists():
        shutil.rmtree(checkpoint)
    export_checkpoint(model.eval(), checkpoint)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(curated / "tokenizer" / name, checkpoint / name)
    metrics["final_phase"] = table["checkpoint"].iloc[-1]
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float) + "\n")
    return metrics
