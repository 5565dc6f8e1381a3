"""What the evaluation stage logs: the comparison table (metrics of the gated checkpoint, the whole table and
the retrieval grid as artifacts), the plots across checkpoints, the gate's verdict (a metric, a tag and an
artifact) and its Deck. A failed gate is recorded, then raised as the stage's refusal."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lineage import plots
from tasks.stage import StageContext, StageResult

if TYPE_CHECKING:
    from evals.run import Evaluation


def record_evaluation(run, evaluation: Evaluation, ctx: StageContext) -> str:
    """Log everything the stage measured; returns the Deck's HTML."""
    from evals.compare import comparison_plots

    out_dir = ctx.out_dir
    for name, folder in ctx.inputs.items():
        if name != "curate":
            run.log_file_input(folder / "checkpoint", name=f"{name}/checkpoint", context="evaluated")
    run.log_metrics(evaluation.metrics)
    for name in ("comparison.parquet", "retrieval.parquet", "rollouts.parquet", "gate_verdict.json", "metrics.json"):
        run.log_artifact(out_dir / name, "evaluation")
    verdict = evaluation.verdict
    run.set_tags({"evaluation_gate": "passed" if verdict.passed else "failed", "gated_checkpoint": verdict.checkpoint})
    table = evaluation.comparison.table
    wide = (
        table[table["family"].isin(["all", "agentic"])]
        .assign(metric=lambda t: t["family"] + "." + t["metric"])
        .pivot(index="metric", columns="checkpoint", values="value")
        .reindex(columns=list(dict.fromkeys(table["checkpoint"])))
        .reset_index()
    )
    checks = [
        {k: getattr(c, k) for k in ("metric", "family", "value", "threshold", "bound", "gap", "passed")}
        for c in verdict.checks
    ]
    word = "PASSED" if verdict.passed else "FAILED"
    deck = [
        f"<h3>Evaluation gate {word} on {verdict.checkpoint} (against {verdict.previous})</h3>",
        plots.table_html(checks, ["metric", "family", "value", "threshold", "bound", "gap", "passed"]),
        "<h3>Every checkpoint, same prompts and seeds</h3>",
        plots.table_html(wide.round(4).to_dict("records"), list(wide.columns)),
    ]
    for stem, fig in comparison_plots(table, evaluation.comparison.retrieval).items():
        run.log_figure(fig, f"plots/{stem}.png")
        deck.append(plots.figure_html(fig))
    return "\n".join(deck)


def run_recorded(ctx: StageContext) -> StageResult:
    from evals.gate import enforce_gate
    from evals.run import run_evaluate
    from tasks.common import record_sandbox_isolation

    record_sandbox_isolation(ctx.run, ctx.cfg)

    checkpoints = {name: folder for name, folder in ctx.inputs.items() if name != "curate"}
    evaluation = run_evaluate(ctx.cfg, ctx.inputs["curate"], checkpoints, ctx.out_dir)
    deck = record_evaluation(ctx.run, evaluation, ctx)
    verdict = enforce_gate(evaluation.verdict)
    final = verdict.checkpoint
    accuracy = evaluation.metrics.get("all.accuracy", float("nan"))
    summary = {k: v for k, v in evaluation.metrics.items() if k.startswith(("all.", "agentic.", "gate."))}
    message = f"{len(checkpoints)} checkpoints compared; gate passed on {final} (accuracy {accuracy:.3f})"
    return StageResult(summary_metrics=summary, deck_html=deck, message=message)
