"""The evaluation stage's work: every checkpoint the run made, compared on the same held-out prompts, then
the gate on the last one.

Outputs (``out_dir``):
  comparison.parquet     ComparisonRow: every metric of every checkpoint (contracted)
  retrieval.parquet      RetrievalRow: passkey retrieval by length and depth (contracted)
  rollouts.parquet       every checkpoint's greedy rollouts with their verdicts, for inspection
  lm_eval/               the local lm-evaluation-harness task built from the held-out prompts
  gate_verdict.json      the gate's verdict on the last checkpoint (what publishing reads)
  metrics.json           flat summary
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from configs import PipelineConfig
    from evals.compare import Comparison
    from evals.gate import GateVerdict

OUTPUTS = (
    "comparison.parquet",
    "retrieval.parquet",
    "rollouts.parquet",
    "lm_eval",
    "gate_verdict.json",
    "metrics.json",
)


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    comparison: Comparison
    verdict: GateVerdict
    metrics: dict[str, Any]


def mismatch_summaries(folders: Mapping[str, Path]) -> dict[str, dict[str, float]]:
    """checkpoint name -> the training-inference mismatch summary its stage wrote (``mismatch_summary.json``),
    for the checkpoints whose stage wrote one (the RL stage)."""
    summaries = {}
    for name, folder in folders.items():
        path = Path(folder) / "mismatch_summary.json"
        if path.exists():
            values = json.loads(path.read_text())
            summaries[name] = {k: float(v) for k, v in values.items() if isinstance(v, int | float)}
    return summaries


def trained_contexts(cfg: PipelineConfig, checkpoints: Mapping[str, Path]) -> dict[str, int]:
    """Checkpoint name -> the longest context its training saw: pre-training's windows for the base, and from the
    migration on (every later stage starts from the migrated model) the context extension's longest stage."""
    pretrained = cfg.pretrain.loop.seq_len
    extended = max(pretrained, cfg.migrate.context_extension.max_seq_len)
    return {name: pretrained if name == "pretrain" else extended for name in checkpoints}


def run_evaluate(cfg: PipelineConfig, curated: Path, stage_folders: Mapping[str, Path], out_dir: Path) -> Evaluation:
    """Compare ``stage_folders`` (stage name -> its output folder holding ``checkpoint/``, in pipeline order)
    and gate the last one against the one before it. Writes the outputs listed above; the caller decides
    what a failed gate does (``evals.gate.enforce_gate``)."""
    from corpus.shards import read_shards
    from environments import all_environments
    from evals.compare import compare_checkpoints
    from evals.gate import gate_verdict, write_gate_verdict
    from evals.lm_eval_task import lm_eval_rows, run_lm_eval, write_local_task
    from evals.tasks import eval_tasks

    ecfg = cfg.evaluate
    if not stage_folders:
        raise ValueError("evaluate: no checkpoint to evaluate")
    for name in OUTPUTS:
        stale = out_dir / name
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    envs = all_environments(cfg.environments)
    tasks = eval_tasks(curated, ecfg.prompts_per_family)
    checkpoints = {name: Path(folder) / "checkpoint" for name, folder in stage_folders.items()}
    comparison = compare_checkpoints(
        checkpoints,
        envs,
        tasks,
        ecfg,
        base=cfg.model,
        heldout_tokens=read_shards(curated / "shards", "heldout"),
        mismatch=mismatch_summaries(stage_folders),
        trained_context=trained_contexts(cfg, checkpoints),
    )
    table = comparison.table
    names = list(checkpoints)
    final, previous = names[-1], (names[-2] if len(names) > 1 else None)
    lm_eval_tasks = list(ecfg.lm_eval.tasks)
    include = None
    if ecfg.lm_eval.local_task:
        include = out_dir / "lm_eval"
        lm_eval_tasks += write_local_task(tasks, envs, include, max_gen_toks=ecfg.lm_eval.max_gen_toks, seed=ecfg.seed)
    if lm_eval_tasks:
        import pandas as pd

        from data_contracts.evaluation import ComparisonRow

        # lm_eval runs on the checkpoint the gate judges: it is the release candidate.
        results = run_lm_eval(
            checkpoints[final],
            lm_eval_tasks,
            limit=ecfg.lm_eval.limit,
            include_path=include,
            num_fewshot=ecfg.lm_eval.num_fewshot,
            batch_size=ecfg.lm_eval.batch_size,
            seed=ecfg.seed,
        )
        table = ComparisonRow.validate(
            pd.concat([table, pd.DataFrame(lm_eval_rows(final, results))], ignore_index=True)
        )
    table.to_parquet(out_dir / "comparison.parquet", index=False)
    comparison.retrieval.to_parquet(out_dir / "retrieval.parquet", index=False)
    comparison.rollouts.to_parquet(out_dir / "rollouts.parquet", index=False)
    verdict = gate_verdict(table, ecfg.gate, checkpoint=final, previous=previous)
    write_gate_verdict(verdict, out_dir)
    metrics = summary_metrics(table, final)
    metrics.update(
        {
            "gate.passed": float(verdict.passed),
            "gate.failed_checks": float(len(verdict.failures)),
            "checkpoints": float(len(names)),
            "prompts": float(len(tasks)),
        }
    )
    (out_dir / "metrics.json").write_text(
        json.dumps({**metrics, "gate_checkpoint": final, "checkpoint_order": names}, indent=2, sort_keys=True) + "\n"
    )
    return Evaluation(comparison=_with_table(comparison, table), verdict=verdict, metrics=metrics)


def summary_metrics(table, checkpoint: str) -> dict[str, float]:
    """``<family>.<metric>`` of ``checkpoint`` for every defined value of the comparison table, named as MLflow
    accepts (``pass@k`` becomes ``pass_at_k``)."""
    rows = table[(table["checkpoint"] == checkpoint) & table["value"].notna()]
    return {f"{r.family}.{r.metric}".replace("@", "_at_"): float(r.value) for r in rows.itertuples()}


def _with_table(comparison: Comparison, table) -> Comparison:
    from dataclasses import replace

    return replace(comparison, table=table)
