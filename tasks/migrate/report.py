"""What the migration stage logs besides per-step metrics: inputs, the measurement table, plots (training loss
per phase, KL vs the base after every step, the parity gate, retrieval by length before / after context
extension), the eval and retrieval tables. Works for a failed gate too (then
there is no eval and no checkpoint)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from lineage import plots
from tasks.stage import StageContext, StageResult
from training.migrate.phases import PHASES

History = Mapping[str, list[tuple[int, dict[str, float]]]]


def gate_title(verdict: Mapping[str, Any]) -> str:
    word = "PASSED" if verdict["passed"] else "FAILED"
    return f"Parity gate {word}: gap {verdict['gap_nats']:+.4f} nats, margin {verdict['margin_nats']:.4f}"


def retrieval_by_length(table: pd.DataFrame) -> pd.DataFrame:
    """Pass-key accuracy per length (rows) before / after extension (columns), over every depth."""
    return table.groupby(["length", "checkpoint"])["accuracy"].mean().unstack("checkpoint")


def retrieval_metrics(table: pd.DataFrame) -> dict[str, float]:
    """``retrieval.<checkpoint>.L<length>.d<depth>`` per cell, ``.L<length>`` per length and ``.all``."""
    flat = {f"retrieval.{r.checkpoint}.L{r.length}.d{r.depth:g}": float(r.accuracy) for r in table.itertuples()}
    for (checkpoint, length), accuracy in table.groupby(["checkpoint", "length"])["accuracy"].mean().items():
        flat[f"retrieval.{checkpoint}.L{length}"] = float(accuracy)
    for checkpoint, accuracy in table.groupby("checkpoint")["accuracy"].mean().items():
        flat[f"retrieval.{checkpoint}.all"] = float(accuracy)
    return flat


def retrieval_figure(table: pd.DataFrame) -> Any:
    by_length = retrieval_by_length(table)
    lengths = [int(n) for n in by_length.index]
    curves = {name: (lengths, by_length[name].tolist()) for name in by_length.columns}
    return plots.line_chart(curves, title="Pass-key retrieval before / after context extension (mean over depths)",
                            xlabel="prompt length (tokens)", ylabel="accuracy")  # fmt: skip


def migrate_figures(metrics: Mapping[str, Any], history: History) -> dict[str, Any]:
    """{artifact path: matplotlib figure} for the loss curves, the KL per step and the gate."""
    points = metrics["steps"]
    figures: dict[str, Any] = {}
    curves = {}
    for phase in (*PHASES, *sorted(name for name in history if name.startswith("context_extension"))):
        rows = [(step, m["loss"]) for step, m in history.get(phase, []) if "loss" in m]
        if rows:
            curves[f"{phase} (train)"] = ([s for s, _ in rows], [v for _, v in rows])
    curves["held-out, after each step"] = ([p["step"] for p in points], [p["heldout_loss"] for p in points])
    last = max(p["step"] for p in points)
    curves["base held-out"] = ([0, last], [metrics["base_heldout_loss"]] * 2)
    figures["plots/loss.png"] = plots.line_chart(
        curves,
        title="Migration: training loss per phase, held-out loss",
        xlabel="optimizer step (all phases)",
        ylabel="nats",
    )
    figures["plots/kl_vs_base.png"] = plots.bar_chart(
        {p["point"]: round(p["kl_vs_base"], 5) for p in points},
        title="KL(base || model) on held-out windows after each step",
        ylabel="nats / token",
    )
    conversions = {p["point"]: round(p["kl_vs_previous"], 5) for p in points if "kl_vs_previous" in p}
    if conversions:
        figures["plots/kl_per_conversion.png"] = plots.bar_chart(
            conversions, title="KL(before || after) of each conversion alone", ylabel="nats / token"
        )
    retrieval = metrics.get("context_extension", {}).get("retrieval")
    if retrieval:
        figures["plots/retrieval_by_length.png"] = retrieval_figure(pd.DataFrame(retrieval))
    verdict = metrics.get("parity_gate")
    if verdict is not None:
        figures["plots/parity_gate.png"] = plots.bar_chart(
            {"base": round(verdict["base_heldout_loss"], 4),
             "base + margin": round(verdict["base_heldout_loss"] + verdict["margin_nats"], 4),
             "migrated": round(verdict["migrated_heldout_loss"], 4)},
            title=gate_title(verdict), ylabel="held-out loss (nats)")  # fmt: skip
    return figures


def record_migrate(
    run: Any, metrics: dict[str, Any], curated: Path, base: Path, out_dir: Path, history: History
) -> str:
    """Log inputs, scalars, tables and plots of one migration into ``run``; returns the Flyte Deck HTML."""
    run.log_file_input(curated / "shards", name="curate/shards", context="training")
    run.log_file_input(base / "checkpoint", name="pretrain/checkpoint", context="initial-weights")
    flat = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    verdict = metrics.get("parity_gate")
    if verdict is not None:
        flat.update({f"parity_gate.{k}": float(v) for k, v in verdict.items()})
    for row in metrics.get("eval", []):
        flat[f"eval.{row['family']}.accuracy"] = row["accuracy"]
        flat[f"eval.{row['family']}.mean_tokens"] = row["mean_tokens"]
    extension = metrics.get("context_extension")
    if extension is not None:
        flat.update(retrieval_metrics(pd.DataFrame(extension["retrieval"])))
    run.log_metrics(flat)
    run.log_dict(metrics, "migrate_metrics.json")
    points = pd.DataFrame(metrics["steps"])
    deck = []
    if verdict is not None:
        deck.append(f"<h3>{gate_title(verdict)}</h3>")
    deck += ["<h3>Held-out loss and KL vs the base after each step</h3>",
             plots.table_html(points.to_dict("records"), list(points.columns))]  # fmt: skip
    for name in ("eval_summary.parquet", "eval_rollouts.parquet", "retrieval.parquet"):
        if (out_dir / name).exists():
            run.log_artifact(out_dir / name, "eval")
    if extension is not None:
        table = pd.DataFrame(extension["retrieval"])
        by_length = retrieval_by_length(table).reset_index()
        scaling = extension["rope_scaling"]
        deck += [f"<h3>Context extension to {int(scaling['factor'] * scaling['original_max_position_embeddings'])} "
                 f"tokens (YaRN factor {scaling['factor']:g}): pass-key retrieval by length</h3>",
                 plots.table_html(by_length.to_dict("records"), list(by_length.columns)),
                 "<h4>by length and depth</h4>", plots.table_html(table.to_dict("records"), list(table.columns))]  # fmt: skip
    if "eval" in metrics:
        rows = metrics["eval"] + metrics.get("base_eval", [])
        deck += ["<h3>Evaluation (migrated vs base)</h3>", plots.table_html(rows, list(rows[0]))]
    for artifact, fig in migrate_figures(metrics, history).items():
        run.log_figure(fig, artifact)
        deck.append(plots.figure_html(fig))
    return "\n".join(deck)


def checkpoint_root() -> Path:
    """The migration's training checkpoints: the same folder on every rank, which resumes from it."""
    from lineage.paths import state_dir

    return state_dir() / "checkpoints" / "migrate"


def run_recorded(ctx: StageContext) -> StageResult:
    """The stage inside its MLflow run: per-step metrics as they come, then plots and tables, and the parity
    verdict as a tag. A failed gate is recorded, then raised as the stage's refusal."""
    from evals.parity_gate import ParityGateFailed
    from training.migrate.run import run_migrate

    history: History = {}
    run, cfg, curated, base, out_dir = ctx.run, ctx.cfg, ctx.inputs["curate"], ctx.inputs["pretrain"], ctx.out_dir

    def on_log(name, step, metrics):
        history.setdefault(name, []).append((step, dict(metrics)))
        run.log_metrics({f"{name}.{k}": v for k, v in metrics.items()}, step=step)

    try:
        metrics = run_migrate(cfg, cfg.migrate, curated, base, out_dir, checkpoint_root=checkpoint_root(),
                              on_log=on_log)  # fmt: skip
    except ParityGateFailed as err:
        run.set_tags({"parity_gate": "failed"})
        record_migrate(run, err.metrics, curated, base, out_dir, history)
        raise
    run.set_tags({"parity_gate": "passed"})
    deck = record_migrate(run, metrics, curated, base, out_dir, history)
    summary = {k: metrics[k] for k in ("heldout_loss", "base_heldout_loss", "kl_vs_base")}
    summary.update({f"accuracy_{r['family']}": r["accuracy"] for r in metrics["eval"]})
    if "context_extension" in metrics:
        summary.update({k: v for k, v in retrieval_metrics(pd.DataFrame(metrics["context_extension"]["retrieval"])).items()
                        if k.endswith(".all")})  # fmt: skip
    message = (
        f"held-out loss {metrics['heldout_loss']:.3f} (base {metrics['base_heldout_loss']:.3f}), "
        f"KL vs base {metrics['kl_vs_base']:.4f}"
    )
    return StageResult(summary_metrics=summary, deck_html=deck, message=message)


def train_beside_rank0(cfg: Any, inputs: Mapping[str, Path]) -> None:
    """A rank > 0: the same conversions and phases as rank 0, in lockstep (every phase's engine reduces over all
    ranks), writing nothing; a failed gate fails this rank too."""
    from lineage.paths import stage_dir
    from training.migrate.run import run_migrate

    run_migrate(cfg, cfg.migrate, inputs["curate"], inputs["pretrain"], stage_dir("migrate"),
                checkpoint_root=checkpoint_root())  # fmt: skip
