"""What the distillation stage logs: one nested MLflow run per training phase (logit, on_policy) with its
per-step metrics and curves; in the stage's run the inputs, every evaluation (student before and after,
each teacher), the per-family before -> after vs teacher table and plots, and the teacher table's
contract counts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from lineage import plots
from lineage.contracts import contract_metrics
from tasks.stage import StageContext, StageResult

History = dict[str, list[tuple[int, dict[str, float]]]]
PHASE_CURVES = {"logit": ("kl", "top1_agreement", "student_tail_mass"), "on_policy": ("reverse_kl", "accuracy")}


def before_after_figures(comparison: pd.DataFrame) -> dict[str, Any]:
    """{artifact path: figure}: per family the student before, its teacher and the student after, for
    accuracy and for mean tokens per correct answer (0 where a model answered nothing correctly)."""
    figures = {}
    for metric, label in (("accuracy", "accuracy"), ("tokens_per_correct", "tokens per correct answer")):
        values = {
            f"{row['family']}: {side}": round(float(pd.Series([row[f"{metric}_{side}"]]).fillna(0.0).iloc[0]), 4)
            for row in comparison.to_dict("records")
            for side in ("before", "teacher", "after")
        }
        figures[f"plots/{metric}_before_after.png"] = plots.bar_chart(
            values, title=f"Distillation: {label}, student before / teacher / student after", ylabel=label
        )
    return figures


def record_distill(
    run: Any,
    metrics: Mapping[str, Any],
    curated: Path,
    inputs: Mapping[str, Path],
    out_dir: Path,
    history: History,
    phase_run_ids: Mapping[str, str],
) -> str:
    """Log inputs, scalars, tables and plots into ``run`` and the phase runs; returns the Flyte Deck HTML."""
    for name in ("rl_prompts", "sft_prompts", "eval"):
        frame = pd.read_parquet(curated / f"{name}.parquet")
        run.log_table_input(frame, name=f"curate/{name}", source=curated / f"{name}.parquet", context="training")
    for stage, folder in sorted(inputs.items()):
        run.log_file_input(folder / "checkpoint", name=f"{stage}/checkpoint", context="teacher-or-initial-weights")
    run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)})
    run.log_metrics(contract_metrics(metrics["contracts"]))
    run.log_dict(dict(metrics), "distill_metrics.json")
    for name in ("eval_summary.parquet", "comparison.parquet"):
        run.log_artifact(out_dir / name, "eval")
    for name in ("teacher_samples.parquet", "quarantine.parquet"):
        run.log_artifact(out_dir / name, "contracts")
    summary = pd.read_parquet(out_dir / "eval_summary.parquet")
    comparison = pd.read_parquet(out_dir / "comparison.parquet")
    deck = [
        "<h3>Per family: student before -> after vs its teacher</h3>",
        plots.table_html(comparison.round(4).to_dict("records"), list(comparison.columns)),
        "<h3>Every evaluation</h3>",
        plots.table_html(summary.round(4).to_dict("records"), list(summary.columns)),
        "<h3>Data contracts</h3>",
        plots.contract_counts_html(metrics["contracts"]),
    ]
    client = mlflow.MlflowClient()
    for phase, keys in PHASE_CURVES.items():
        points = history.get(phase, [])
        if not points or phase not in phase_run_ids:
            continue
        steps = [s for s, _ in points]
        fig = plots.line_chart(
            {k: (steps, [m.get(k, float("nan")) for _, m in points]) for k in keys},
            title=f"{phase} distillation",
            xlabel="step",
            ylabel="value",
        )
        client.log_figure(phase_run_ids[phase], fig, f"plots/{phase}_curves.png")
        deck.append(plots.figure_html(fig))
    if len(comparison):
        for artifact, fig in before_after_figures(comparison).items():
            run.log_figure(fig, artifact)
            deck.append(plots.figure_html(fig))
    return "\n".join(deck)


def run_recorded(ctx: StageContext) -> StageResult:
    """The stage inside its MLflow run: each training phase's per-step metrics into its own nested run as
    they come, evaluations into the stage's run, then tables and plots."""
    from lineage.runs import ChildRuns
    from training.distill.run import run_distill

    run, curated, out_dir = ctx.run, ctx.inputs["curate"], ctx.out_dir
    teachers = {name: ctx.inputs[name] for name in ("post_train", "kpop_rl")}
    history: History = {}
    phases = ChildRuns(run.run_id, tag="ling26.phase")

    def on_log(phase, step, metrics):
        history.setdefault(phase, []).append((step, dict(metrics)))
        if phase in PHASE_CURVES:
            phases.log_metrics(phase, metrics, step)
        else:
            run.log_metrics(metrics, step=step)

    try:
        metrics = run_distill(ctx.cfg, curated, teachers, ctx.inputs["post_train"], out_dir, on_log=on_log)
    except BaseException:
        phases.close("FAILED")
        raise
    phases.close("FINISHED")
    inputs = {name: ctx.inputs[name] for name in ("post_train", "kpop_rl")}
    deck = record_distill(run, metrics, curated, inputs, out_dir, history, phases.run_ids)
    keys = ("all.accuracy_before", "all.accuracy_after", "all.tokens_per_correct_ratio", "agentic.accuracy_gain")
    summary = {k: metrics[k] for k in keys if k in metrics}
    message = f"accuracy {metrics['all.accuracy_before']:.3f} -> {metrics['all.accuracy_after']:.3f}"
    return StageResult(summary_metrics=summary, deck_html=deck, message=message)
