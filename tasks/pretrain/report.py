"""What the pre-training stage logs besides per-step metrics: inputs, eval tables, plots, the checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from lineage import plots


def record_pretrain(
    run: Any, metrics: dict[str, Any], curated: Path, out_dir: Path, history: list[tuple[int, dict[str, float]]]
) -> str:
    run.log_file_input(curated / "shards", name="curate/shards", context="training")
    run.log_file_input(curated / "tokenizer", name="curate/tokenizer", context="training")
    eval_frame = pd.read_parquet(curated / "eval.parquet")
    run.log_table_input(eval_frame, name="curate/eval", source=curated / "eval.parquet", context="evaluation")
    summary = pd.read_parquet(out_dir / "eval_summary.parquet")
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    for row in summary.itertuples():
        flat[f"eval.{row.family}.accuracy"] = row.accuracy
        flat[f"eval.{row.family}.mean_tokens"] = row.mean_tokens
        if row.mean_tokens_correct == row.mean_tokens_correct:
            flat[f"eval.{row.family}.mean_tokens_correct"] = row.mean_tokens_correct
    run.log_metrics(flat)
    run.log_dict(metrics, "pretrain_metrics.json")
    run.log_artifact(out_dir / "eval_summary.parquet", "eval")
    run.log_artifact(out_dir / "eval_rollouts.parquet", "eval")
    deck = ["<h3>Evaluation</h3>", plots.table_html(summary.to_dict("records"), list(summary.columns))]
    figures = {
        "plots/eval_accuracy.png": plots.bar_chart(
            dict(zip(summary["family"], summary["accuracy"], strict=True)),
            title="Eval accuracy by family (pretrained base)",
            ylabel="accuracy",
        ),
    }
    if history:
        steps = [s for s, _ in history]
        curves = {
            k: (steps, [m.get(k, float("nan")) for _, m in history])
            for k in ("loss", "lm_loss", "mtp_loss")
            if any(k in m for _, m in history)
        }
        curves["heldout (merged, end)"] = ([steps[-1]], [metrics["heldout_loss"]])
        curves["unigram baseline"] = ([steps[0], steps[-1]], [metrics["unigram_heldout_loss"]] * 2)
        figures["plots/loss.png"] = plots.line_chart(curves, title="Pre-training loss", xlabel="step", ylabel="nats")
        if any("load_balance" in m for _, m in history):
            figures["plots/expert_load_balance.png"] = plots.line_chart(
                {"max/mean expert load": (steps, [m.get("load_balance", float("nan")) for _, m in history])},
                title="MoE load balance (1 = balanced)",
                xlabel="step",
                ylabel="ratio",
            )
        if any("tokens_per_s" in m for _, m in history):
            figures["plots/throughput.png"] = plots.line_chart(
                {"tokens/s": (steps, [m.get("tokens_per_s", float("nan")) for _, m in history])},
                title="Training throughput",
                xlabel="step",
                ylabel="tokens/s",
            )
    for artifact, fig in figures.items():
        run.log_figure(fig, artifact)
        deck.append(plots.figure_html(fig))
    return "\n".join(deck)


def run_recorded(run, cfg, curated: Path, out_dir: Path) -> tuple[dict[str, Any], str]:
    """The stage inside its MLflow run ``run`` (what the Flyte task and ``python -m tasks.pretrain`` share):
    per-step metrics as they come, then plots and tables. Returns (metrics, Deck HTML)."""
    from tasks.pretrain.stage import pretrain_checkpoint_root, run_pretrain

    history: list[tuple[int, dict[str, float]]] = []

    def on_log(step, metrics):
        history.append((step, dict(metrics)))
        run.log_metrics(metrics, step=step)

    metrics = run_pretrain(cfg, curated, out_dir, checkpoint_root=pretrain_checkpoint_root(), on_log=on_log)
    return metrics, record_pretrain(run, metrics, curated, out_dir, history)
