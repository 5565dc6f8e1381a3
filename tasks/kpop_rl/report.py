"""What the KPop RL stage logs into its MLflow run: the sandbox isolation in force (a param: RL must not train
on rewards a program can forge), its inputs, per-update metrics as they come, per-family accuracy before and
after, the rollout contract's counts, the mismatch report (artifact + metrics) and the plots: reward and
mismatch curves, accuracy per family before/after, the histogram of log π_train − log π_infer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from lineage import plots
from lineage.contracts import contract_metrics
from tasks.stage import StageContext, StageResult

ARTIFACTS = ("mismatch_summary.json", "versions.json", "eval_summary.parquet", "curriculum.parquet", "steps.parquet")
MISMATCH_CURVES = ("behav/masked_fraction", "behav/logp_abs_diff", "behav/k3_kl")


def figures(out_dir: Path) -> dict[str, Any]:
    steps = pd.read_parquet(out_dir / "steps.parquet")
    summary = pd.read_parquet(out_dir / "eval_summary.parquet")
    tokens = pd.read_parquet(out_dir / "mismatch_tokens.parquet")
    x = steps["step"].tolist()
    rewards = {"all": (x, steps["reward_mean"].tolist())}
    for column in sorted(c for c in steps.columns if c.startswith("reward.")):
        rewards[column.removeprefix("reward.")] = (x, steps[column].tolist())
    accuracy = {
        f"{row.family} {row.checkpoint}": float(row.accuracy)
        for row in summary.sort_values(["family", "checkpoint"], ascending=[True, False]).itertuples()
    }
    delta = tokens["logp_train"] - tokens["logp_infer"]
    fresh = tokens["staleness"] == 0
    out = {
        "plots/reward.png": plots.line_chart(rewards, title="RL reward per update", xlabel="step", ylabel="reward"),
        "plots/mismatch.png": plots.line_chart(
            {k: (x, steps[k].tolist()) for k in MISMATCH_CURVES if k in steps},
            title="Behaviour-weight mismatch per update (π_prox vs π_infer)",
            xlabel="step",
            ylabel="value",
        ),
        "plots/accuracy_by_family.png": plots.bar_chart(
            accuracy, title="Greedy eval accuracy before / after RL", ylabel="accuracy"
        ),
    }
    if len(tokens):  # a run whose every record was quarantined trained no token
        out["plots/mismatch_histogram.png"] = plots.histogram(
            {"fresh tokens": delta[fresh].tolist(), "stale tokens": delta[~fresh].tolist()},
            title="log π_train − log π_infer per sampled token",
            xlabel="Δ log p",
        )
    return out


def record(run: Any, metrics: dict[str, Any], curated: Path, base: Path, out_dir: Path) -> str:
    for name in ("rl_prompts", "eval"):
        frame = pd.read_parquet(curated / f"{name}.parquet")
        run.log_table_input(frame, name=f"curate/{name}", source=curated / f"{name}.parquet", context="training")
    run.log_file_input(base / "checkpoint", name="initial/checkpoint", context="initial-weights")
    run.log_metrics({k: v for k, v in metrics.items() if isinstance(v, float)})
    run.log_metrics(contract_metrics(metrics["contracts"]))
    run.log_dict(metrics, "kpop_rl_metrics.json")
    for name in ARTIFACTS:
        run.log_artifact(out_dir / name, "report")
    run.log_artifact(out_dir / "quarantine.parquet", "contracts")
    rollouts = pd.read_parquet(out_dir / "rollouts.parquet")
    if len(rollouts):
        run.log_table_input(rollouts, name="kpop_rl/rollouts", source=out_dir / "rollouts.parquet", context="output")
    summary = pd.read_parquet(out_dir / "eval_summary.parquet")
    mismatch = json.loads((out_dir / "mismatch_summary.json").read_text())
    methods = [{"method": m, **v} for m, v in mismatch["by_method"].items()]
    deck = [
        "<h3>Evaluation before / after</h3>",
        plots.table_html(summary.to_dict("records"), list(summary.columns)),
        "<h3>Rollout contract</h3>",
        plots.contract_counts_html(metrics["contracts"]),
        "<h3>What each correction masks on the fresh tokens</h3>",
        plots.table_html(methods, ["method", "masked_fraction", "masked_row_fraction"]),
    ]
    for artifact, fig in figures(out_dir).items():
        run.log_figure(fig, artifact)
        deck.append(plots.figure_html(fig))
    return "\n".join(deck)


def run_recorded(ctx: StageContext) -> StageResult:
    """The stage inside its MLflow run: isolation param first (the sandbox refuses early if it cannot isolate),
    per-update and eval metrics as they come, then tables, artifacts and plots."""
    import mlflow

    from environments.sandbox import sandbox_isolation
    from training.rl.run import run_kpop_rl

    run, curated, base, out_dir = ctx.run, ctx.inputs["curate"], ctx.inputs["post_train"], ctx.out_dir
    isolation = sandbox_isolation(allow_weak_isolation=ctx.cfg.environments.sandbox_allow_weak_isolation)
    mlflow.log_param("sandbox_isolation", isolation)

    def on_log(name: str, step: int, metrics: dict[str, float]) -> None:
        # Per-update curves under "train." so they never share a key with the run's summary "rl." numbers.
        run.log_metrics({k if name == "eval" else f"train.{k}": v for k, v in metrics.items()}, step=step)

    metrics = run_kpop_rl(ctx.cfg, curated, base, out_dir, on_log=on_log)
    deck = record(run, metrics, curated, base, out_dir)
    summary = {k: v for k, v in metrics.items() if k.startswith("eval.after.") and k.endswith(".accuracy")}
    summary.update({k: metrics[k] for k in ("rl.reward_mean", "mismatch.masked_fraction") if k in metrics})
    accuracy = metrics.get("eval.after.all.accuracy", float("nan"))
    masked = metrics.get("mismatch.masked_fraction", float("nan"))
    message = (
        f"after RL accuracy {accuracy:.3f} (sandbox {isolation}); {ctx.cfg.kpop_rl.correction} masked {masked:.4f}"
    )
    return StageResult(summary_metrics=summary, deck_html=deck, message=message)
