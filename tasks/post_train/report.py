"""What the post-training stage logs: one nested MLflow run per phase (sft, rl, preference) under the stage's
run, with the phase's per-step metrics, its evaluation and its plots; in the stage's run the inputs, the base
evaluation, the phase-by-phase eval table, the contract counts and the plots across phases."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from lineage import plots
from lineage.contracts import contract_metrics
from tasks.stage import StageContext, StageResult


def record_post_train(
    run: Any,
    metrics: dict[str, Any],
    curated: Path,
    base: Path,
    out_dir: Path,
    history: dict[str, list[tuple[int, dict[str, float]]]],
    phase_run_ids: Mapping[str, str],
) -> str:
    for name in ("candidates", "sft", "rl_prompts", "eval"):
        frame = pd.read_parquet(curated / f"{name}.parquet")
        run.log_table_input(frame, name=f"curate/{name}", source=curated / f"{name}.parquet", context="training")
    run.log_file_input(base / "checkpoint", name="initial/checkpoint", context="initial-weights")
    summary = pd.read_parquet(out_dir / "eval_summary.parquet")
    run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)})
    run.log_metrics(contract_metrics(metrics["contracts"]))
    run.log_dict(metrics, "post_train_metrics.json")
    run.log_artifact(out_dir / "eval_summary.parquet", "eval")
    quarantine = out_dir / "quarantine.parquet"
    run.log_artifact(quarantine, "contracts")
    quarantined = pd.read_parquet(quarantine)
    # MLflow cannot infer a schema for an empty table (the usual case here); the artifact still records it.
    if len(quarantined):
        run.log_table_input(quarantined, name="post_train/quarantine", source=quarantine, context="output")
    overall = summary[summary["family"] == "all"]
    deck = [
        "<h3>Evaluation after each phase</h3>",
        plots.table_html(summary.to_dict("records"), list(summary.columns)),
        "<h3>Data contracts</h3>",
        plots.contract_counts_html(metrics["contracts"]),
    ]
    figures = {
        "plots/accuracy_by_phase.png": plots.bar_chart(
            dict(zip(overall["checkpoint"], overall["accuracy"], strict=True)),
            title="Eval accuracy after each phase",
            ylabel="accuracy",
        ),
        "plots/tokens_per_correct_by_phase.png": plots.bar_chart(
            dict(zip(overall["checkpoint"], overall["mean_tokens_correct"].fillna(0.0), strict=True)),
            title="Mean output tokens per correct answer",
            ylabel="tokens",
        ),
    }
    phase_figures: dict[str, dict[str, Any]] = {}
    for phase, keys in (
        ("sft", ("loss", "token_accuracy")),
        ("rl", ("reward", "accuracy", "clip_fraction")),
        ("preference", ("loss", "pairs")),
    ):
        points = history.get(phase, [])
        if points:
            steps = [s for s, _ in points]
            phase_figures.setdefault(phase, {})[f"plots/{phase}_curves.png"] = plots.line_chart(
                {k: (steps, [m.get(k, float("nan")) for _, m in points]) for k in keys},
                title=f"{phase} phase",
                xlabel="step",
                ylabel="value",
            )
    rl_points = history.get("rl", [])
    if rl_points:
        steps = [s for s, _ in rl_points]
        phase_figures["rl"]["plots/rl_length.png"] = plots.line_chart(
            {k: (steps, [m[k] for _, m in rl_points]) for k in ("mean_response_tokens", "mean_correct_tokens")},
            title="RL: response length",
            xlabel="step",
            ylabel="model tokens",
        )
    client = mlflow.MlflowClient()
    for phase, phase_figs in phase_figures.items():
        for artifact, fig in phase_figs.items():
            client.log_figure(phase_run_ids[phase], fig, artifact)
            deck.append(plots.figure_html(fig))
    for artifact, fig in figures.items():
        run.log_figure(fig, artifact)
        deck.append(plots.figure_html(fig))
    return "\n".join(deck)


def run_recorded(ctx: StageContext) -> StageResult:
    """The stage inside its MLflow run: each phase's per-step metrics and evaluation into its own nested run
    as they come (the base evaluation into the stage's run), then plots and tables."""
    from lineage.runs import ChildRuns
    from tasks.common import record_sandbox_isolation
    from training.post_train.run import PHASES, run_post_train

    record_sandbox_isolation(ctx.run, ctx.cfg)

    run, curated, base, out_dir = ctx.run, ctx.inputs["curate"], ctx.inputs["migrate"], ctx.out_dir
    trained_phases = PHASES[1:]  # the base is evaluated, not trained: its evaluation is the stage's
    history: dict[str, list] = {}
    phases = ChildRuns(run.run_id, tag="ling26.phase")

    def on_log(phase, step, metrics):
        history.setdefault(phase, []).append((step, dict(metrics)))
        if phase == "eval":
            # Keys are eval.<checkpoint>.<family>.<metric>; the checkpoint is the phase just finished.
            phase = next(iter(metrics)).split(".")[1]
        if phase in trained_phases:
            phases.log_metrics(phase, metrics, step)
        else:
            run.log_metrics(metrics, step=step)

    try:
        metrics = run_post_train(ctx.cfg, curated, base, out_dir, on_log=on_log)
    except BaseException:
        phases.close("FAILED")
        raise
    phases.close("FINISHED")
    deck = record_post_train(run, metrics, curated, base, out_dir, history, phases.run_ids)
    final = metrics["final_phase"]
    prefix = f"eval.{final}.all."
    summary = {k.removeprefix(f"eval.{final}."): v for k, v in metrics.items() if k.startswith(prefix)}
    accuracy = metrics.get(f"{prefix}accuracy", float("nan"))
    return StageResult(summary_metrics=summary, deck_html=deck, message=f"{final} accuracy {accuracy:.3f}")
