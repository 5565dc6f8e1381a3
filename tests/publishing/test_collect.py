"""Collecting a release's lineage from runs written by the pipeline's own lineage code (``lineage.runs``,
``lineage.contracts.contract_metrics``), so a renamed tag or metric breaks here, not on the Hub."""

import dataclasses
import json
import math

import pandas as pd
import pytest

from lineage.contracts import contract_metrics
from lineage.manifest import flyte_execution_id, git_state
from lineage.runs import open_pipeline_run, stage_run
from publishing import (
    EvalGate,
    EvalMetric,
    check_release,
    collect_lineage,
    eval_metrics_from_summary,
    stage_run_ids_from_reports,
)

EXPERIMENT = "ling26-publish-test"
CURATE_REPORT = {
    "tables": {
        "sft": {"rows_in": 50, "rows_kept": 48, "rows_quarantined": 2, "quarantined_by_rule": {"too_long": 2}},
        "eval": {"rows_in": 20, "rows_kept": 20, "rows_quarantined": 0, "quarantined_by_rule": {}},
    },
    "suites": [{"suite": "ling26.sft", "success": True, "evaluated": 7, "failed": []}],
    "decontamination": {"ngram": 8, "eval_content_ngrams": 321, "template_ngrams_ignored": 4},
}
POST_TRAIN_CONTRACTS = {
    "pairs": {"rows_in": 12, "rows_kept": 11, "rows_quarantined": 1, "quarantined_by_rule": {"chosen.rejected": 1}}
}
GATE = EvalGate(passed=True, metrics=(EvalMetric(task="all", metric="accuracy", value=0.5, dataset="ling26/eval"),))


@pytest.fixture
def pipeline_runs(tracking_uri) -> tuple[str, dict[str, str]]:
    """A parent run and seven stage runs tagged the way the stage tasks tag them."""
    common = dict(experiment=EXPERIMENT, configured_uri=tracking_uri, config={"seed": 1}, config_hash="c" * 16, seed=1)
    parent = open_pipeline_run(profile="tiny_cpu", **common)
    run_ids = {}
    for stage in ("curate", "pretrain", "migrate", "post_train", "kpop_rl", "distill", "evaluate"):
        with stage_run(stage, parent_run_id=parent, **common) as run:
            run.set_tags({f"dvc.data/{stage}": f"{stage}-md5.dir"})
            if stage == "curate":
                run.log_dict(CURATE_REPORT, "contract_report.json")
            if stage == "migrate":
                run.set_tags({"parity_gate": "passed"})
            if stage == "post_train":
                run.log_metrics(contract_metrics(POST_TRAIN_CONTRACTS))
            if stage == "evaluate":
                run.set_tags({"evaluation_gate": "passed"})
            run_ids[stage] = run.run_id
    return parent, run_ids


def test_lineage_comes_from_the_stage_runs(tracking_uri, pipeline_runs, config):
    parent, run_ids = pipeline_runs
    lineage = collect_lineage(tracking_uri=tracking_uri, parent_run_id=parent, stage_run_ids=run_ids, eval_gate=GATE)
    git = git_state()
    assert lineage.git_sha == git["git_sha"] and lineage.git_dirty == git["git_dirty"]
    assert lineage.flyte_execution_id == flyte_execution_id() and lineage.parent_run_id == parent
    assert [s.stage for s in lineage.stages] == [
        "curate",
        "pretrain",
        "migrate",
        "post_train",
        "kpop_rl",
        "distill",
        "evaluate",
    ]
    for stage in lineage.stages:
        assert stage.run_id == run_ids[stage.stage] and stage.git_sha == git["git_sha"]
        assert stage.outputs == {f"data/{stage.stage}": f"{stage.stage}-md5.dir"}
    assert lineage.stage("migrate").gates == {"parity_gate": "passed"}
    tables = {(t.stage, t.table): t for t in lineage.contracts}
    assert set(tables) == {("curate", "sft"), ("curate", "eval"), ("post_train", "pairs")}
    assert tables["curate", "sft"].quarantined_by_rule == {"too_long": 2}
    assert tables["post_train", "pairs"].rows_quarantined == 1
    assert tables["post_train", "pairs"].quarantined_by_rule == {"chosen.rejected": 1}
    assert [s.suite for s in lineage.suites] == ["ling26.sft"]
    assert lineage.decontamination["eval_content_ngrams"] == 321
    # The work tree's own state decides git_dirty here; the gate's dirty rule has its own tests.
    assert check_release(lineage, dataclasses.replace(config, allow_dirty=True)).passed


def test_a_stage_without_dvc_hashes_is_refused(tracking_uri, pipeline_runs, config):
    import mlflow

    parent, run_ids = pipeline_runs
    mlflow.MlflowClient(tracking_uri=tracking_uri).delete_tag(run_ids["pretrain"], "dvc.data/pretrain")
    lineage = collect_lineage(tracking_uri=tracking_uri, parent_run_id=parent, stage_run_ids=run_ids, eval_gate=GATE)
    reasons = check_release(lineage, dataclasses.replace(config, allow_dirty=True)).reasons
    assert reasons == (f"stage pretrain (run {run_ids['pretrain']}) has no DVC output hashes: run it with "
                       "lineage.dvc=true inside the DVC repository, or set publish.allow_unversioned=true (the card "
                       "will record it)",)  # fmt: skip


def test_stage_run_ids_come_from_the_stage_reports():
    reports = [json.dumps({"stage": "curate", "mlflow_run_id": "r1"}), json.dumps({"stage": "pretrain"})]
    assert stage_run_ids_from_reports(reports) == {"curate": "r1", "pretrain": ""}


def test_eval_metrics_are_the_last_checkpoints_rows():
    summary = pd.DataFrame(
        [
            {"checkpoint": "sft", "family": "math", "accuracy": 0.1, "format_rate": 0.5, "mean_tokens_correct": 9.0},
            {"checkpoint": "rl", "family": "math", "accuracy": 0.3, "format_rate": 0.9, "mean_tokens_correct": 7.0},
            {
                "checkpoint": "rl",
                "family": "code",
                "accuracy": 0.0,
                "format_rate": 0.2,
                "mean_tokens_correct": math.nan,
            },
        ]
    )
    metrics = eval_metrics_from_summary(summary, dataset="ling26/eval")
    assert {(m.task, m.metric): m.value for m in metrics} == {
        ("math", "accuracy"): 0.3, ("math", "format_rate"): 0.9, ("math", "mean_tokens_correct"): 7.0,
        ("code", "accuracy"): 0.0, ("code", "format_rate"): 0.2,
    }  # fmt: skip
