"""The stage as ``python -m tasks distill`` and the Flyte task run it (``tasks.stage.execute``): one MLflow run
with a nested run per training phase, the comparison as metrics, tables and plots, the report skeleton."""

import ast
import dataclasses
from pathlib import Path

import mlflow

from tasks.distill.task import STAGE
from tasks.stage import execute


def test_stage_records_phases_metrics_and_plots_in_mlflow(world):
    d = world.cfg.distill
    cfg = dataclasses.replace(
        world.cfg,
        distill=dataclasses.replace(
            d, logit=dataclasses.replace(d.logit, steps=5), on_policy=dataclasses.replace(d.on_policy, steps=1)
        ),
    )
    inputs = {"curate": world.curated, "post_train": world.student, "kpop_rl": world.teacher}
    report, result = execute(STAGE, cfg, None, inputs, {})

    assert report["stage"] == "distill" and report["dvc"] == {}
    assert set(report["summary_metrics"]) >= {"all.accuracy_before", "all.accuracy_after", "agentic.accuracy_gain"}
    assert "Per family: student before" in result.deck_html and "Data contracts" in result.deck_html
    client = mlflow.MlflowClient()
    run = client.get_run(report["mlflow_run_id"])
    assert "family.tool_use.accuracy_after" in run.data.metrics
    assert run.data.metrics["contracts.teacher_samples.rows_in"] == (
        run.data.metrics["contracts.teacher_samples.rows_kept"]
        + run.data.metrics["contracts.teacher_samples.rows_quarantined"]
    )
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert artifacts == {"plots/accuracy_before_after.png", "plots/tokens_per_correct_before_after.png"}
    children = client.search_runs(
        [run.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{run.info.run_id}'"
    )
    phases = {c.data.tags["ling26.phase"]: c for c in children}
    assert set(phases) == {"logit", "on_policy"}
    assert "kl" in phases["logit"].data.metrics and "reverse_kl" in phases["on_policy"].data.metrics
    assert result.message.startswith("accuracy")


def test_the_stage_module_imports_no_other_stage():
    for path in (Path(__file__).parents[2] / "tasks" / "distill").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for name in names:
                parts = name.split(".")
                assert not (parts[0] == "tasks" and len(parts) > 2 and parts[1] != "distill"), (path.name, name)
