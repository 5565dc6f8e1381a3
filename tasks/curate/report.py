"""What the curation stage logs: dataset inputs/outputs with digests, counts as metrics, the contract
report and its plots (MLflow artifacts), and the same as HTML for a Flyte Deck."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from lineage import plots
from tasks.stage import StageContext, StageResult

TABLE_FILES = {
    "pretrain_documents": "pretrain_documents.parquet",
    "sft": "sft.parquet",
    "candidates": "candidates.parquet",
    "rl_prompts": "rl_prompts.parquet",
    "sft_prompts": "sft_prompts.parquet",
    "eval": "eval.parquet",
    "quarantine": "quarantine.parquet",
}


def record_curation(run: Any, report: dict[str, Any], out_dir: Path, *, extra_documents: str | None) -> str:
    """Log everything about a finished curation into ``run``; returns the Deck HTML."""
    if extra_documents:
        run.log_file_input(Path(extra_documents), name="extra_documents", context="input")
    for name, file in TABLE_FILES.items():
        run.log_table_input(
            pd.read_parquet(out_dir / file), name=f"curate/{name}", source=out_dir / file, context="output"
        )
    run.log_file_input(out_dir / "shards", name="curate/shards", context="output")
    run.log_file_input(out_dir / "tokenizer", name="curate/tokenizer", context="output")

    metrics = {
        "tokens_train": report["tokens"]["train"],
        "tokens_heldout": report["tokens"]["heldout"],
        "sft_examples": report["sft_examples"],
        "candidates": report["candidates"],
    }
    for table, t in report["tables"].items():
        metrics[f"{table}.rows_in"] = t["rows_in"]
        metrics[f"{table}.rows_kept"] = t["rows_kept"]
        metrics[f"{table}.rows_quarantined"] = t["rows_quarantined"]
    run.log_metrics(metrics)
    run.log_dict(report, "contract_report.json")
    run.log_artifact(out_dir / "quarantine.parquet", "contracts")

    quarantined = {
        f"{table}:{rule}": n for table, t in report["tables"].items() for rule, n in t["quarantined_by_rule"].items()
    }
    figures = {
        "plots/quarantine_by_rule.png": plots.bar_chart(
            quarantined or {"none": 0}, title="Quarantined rows by table:rule"
        ),
        "plots/rows_by_table.png": plots.bar_chart(
            {t: v["rows_kept"] for t, v in report["tables"].items()}, title="Rows kept per table"
        ),
        "plots/document_chars.png": _length_plot(out_dir),
    }
    deck = [
        "<h3>Contract report</h3>",
        plots.contract_counts_html(report["tables"]),
        "<h3>great-expectations suites</h3>",
        plots.table_html(report["suites"], ["suite", "success", "evaluated", "failed"]),
    ]
    for artifact, fig in figures.items():
        run.log_figure(fig, artifact)
        deck.append(plots.figure_html(fig))
    return "\n".join(deck)


def _length_plot(out_dir: Path) -> Any:
    docs = pd.read_parquet(out_dir / "pretrain_documents.parquet", columns=["source", "n_chars"])
    groups = {src: g["n_chars"].tolist() for src, g in docs.groupby("source")}
    return plots.histogram(groups, title="Pre-training document length by source", xlabel="characters", log_x=True)


def run_recorded(ctx: StageContext) -> StageResult:
    """The curation stage inside its MLflow run: curate, then record inputs, outputs and contract counts."""
    from corpus.curation import finish, run_curation
    from corpus.haystack import write_haystacks
    from tasks.common import record_sandbox_isolation

    record_sandbox_isolation(ctx.run, ctx.cfg)

    extra = ctx.options.get("extra_documents") or None
    on_bad_rows = ctx.options.get("on_bad_rows") or "quarantine"
    if "decided" in ctx.inputs:
        # On Flyte the maps ran before this task (workflows.curation); only the last reduce is left.
        tokens = sorted(ctx.inputs["tokens"].glob("*.pkl"))
        report = finish(ctx.cfg, ctx.inputs["prepared"], ctx.inputs["decided"], tokens, ctx.out_dir)
    else:
        report = run_curation(ctx.cfg, ctx.out_dir, extra_documents=extra, on_bad_rows=on_bad_rows)
    deck = record_curation(ctx.run, report, ctx.out_dir, extra_documents=extra)
    write_haystacks(ctx.cfg, ctx.out_dir, run=ctx.run)  # the migration stage's context-extension retrieval data
    quarantined = sum(t["rows_quarantined"] for t in report["tables"].values())
    return StageResult(
        summary_metrics={
            "tokens_train": report["tokens"]["train"],
            "sft_examples": report["sft_examples"],
            "rows_quarantined": quarantined,
        },
        deck_html=deck,
        message=f"{report['tokens']['train']} training tokens, {quarantined} rows quarantined",
    )
