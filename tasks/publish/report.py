"""What the publish stage logs: the release's location, registered version and weights digest (tags set by
``publishing.release``), the card and lineage (artifacts), and a Deck with the card and the links."""

from __future__ import annotations

import html
import json

from lineage import plots
from tasks.stage import StageContext, StageResult


def stage_run_ids(ctx: StageContext) -> dict[str, str]:
    """stage -> MLflow run id of every stage the release depends on (see ``publishing.from_stages``)."""
    import mlflow

    from lineage.paths import REPO_ROOT
    from publishing.collect import stage_run_ids_from_reports
    from publishing.from_stages import dvc_lock_outputs, stage_runs_from_store

    reports = json.loads(ctx.options.get("stage_reports") or "[]")
    if reports:
        return stage_run_ids_from_reports(reports)
    client = mlflow.MlflowClient()
    stages = [name for name in ctx.inputs]
    return stage_runs_from_store(client, ctx.cfg.lineage.experiment, stages, dvc_lock_outputs(REPO_ROOT))


def run_recorded(ctx: StageContext) -> StageResult:
    from publishing.from_stages import gate_verdict, release_from_stages

    run_ids = stage_run_ids(ctx)
    ctx.run.log_dict(run_ids, "release/stage_runs.json")
    gated = gate_verdict(ctx.inputs["evaluate"])["checkpoint"]
    ctx.run.log_file_input(ctx.inputs[gated] / "checkpoint", name=f"{gated}/checkpoint", context="released")
    ctx.run.log_file_input(ctx.inputs["evaluate"] / "gate_verdict.json", name="evaluate/gate_verdict", context="gate")
    result = release_from_stages(ctx.cfg, ctx.inputs, run_id=ctx.run.run_id, stage_run_ids=run_ids, out_dir=ctx.out_dir)
    version = result.model_version
    summary = {
        "publish.weight_files": float(len(result.folder.weight_files)),
        "publish.model_version": float(version.version),
        "publish.dirty_allowed": float(result.verdict.dirty_allowed),
    }
    ctx.run.log_metrics(summary)
    card = (result.folder.path / "README.md").read_text()
    links = [
        {"what": "hub location", "value": result.hub.location},
        {"what": "hub revision", "value": result.hub.revision},
        {"what": "registered model", "value": f"{ctx.cfg.lineage.registered_model} v{version.version}"},
        {"what": "weights sha256", "value": result.folder.weights_sha256},
    ]
    deck = [
        "<h3>Release</h3>",
        plots.table_html(links, ["what", "value"]),
        "<h3>Model card</h3>",
        f"<pre>{html.escape(card)}</pre>",
    ]
    message = f"published {ctx.cfg.publish.repo_id} ({ctx.cfg.publish.mode}) at {result.hub.location}; MLflow version {version.version}"
    return StageResult(summary_metrics=summary, deck_html="\n".join(deck), message=message)
