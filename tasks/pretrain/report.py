"""What the pre-training stage logs besides per-step metrics: inputs, eval tables, plots, the checkpoint."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from lineage import plots
from tasks.stage import StageContext, StageResult


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


def run_recorded(ctx: StageContext) -> StageResult:
    """The stage inside its MLflow run: per-step metrics as they come, then plots and tables."""
    from training.pretrain import pretrain_checkpoint_root, run_pretrain

    history: list[tuple[int, dict[str, float]]] = []

    def on_log(step, metrics):
        history.append((step, dict(metrics)))
        ctx.run.log_metrics(metrics, step=step)

    curated = ctx.inputs["curate"]
    metrics = run_pretrain(ctx.cfg, curated, ctx.out_dir, checkpoint_root=pretrain_checkpoint_root(), on_log=on_log)
    deck = record_pretrain(ctx.run, metrics, curated, ctx.out_dir, history)
    summary = {k: metrics[k] for k in ("heldout_loss", "unigram_heldout_loss")}
    summary.update({f"accuracy_{r['family']}": r["accuracy"] for r in metrics["eval"]})
    message = f"held-out loss {metrics['heldout_loss']:.3f} (unigram {metrics['unigram_heldout_loss']:.3f})"
    return StageResult(summary_metrics=summary, deck_html=deck, message=message)


def train_beside_rank0(cfg: Any, inputs: Mapping[str, Path]) -> None:
    """A rank > 0: train in lockstep with rank 0 (its collectives need every rank), touch nothing else.
    An imported base is not trained: rank 0 alone evaluates and exports it."""
    from lineage.paths import stage_dir
    from training.pretrain import pretrain_checkpoint_root, run_pretrain

    if not cfg.pretrain.base_checkpoint:
        run_pretrain(cfg, inputs["curate"], stage_dir("pretrain"), checkpoint_root=pretrain_checkpoint_root())
