"""The publish stage on stage-shaped folders and stage runs written by the pipeline's own lineage code: it
releases the checkpoint the evaluation gate judged, links every stage run, and refuses a failed gate after
recording why; run alone, it finds each stage's run in the store by the DVC hash dvc.lock records."""

import dataclasses
import json
import shutil

import mlflow
import pandas as pd
import pytest

from configs.pipeline import tiny_cpu
from lineage.contracts import contract_metrics
from lineage.manifest import git_state
from lineage.refusal import StageRefused
from lineage.runs import open_pipeline_run, stage_run
from publishing.from_stages import stage_runs_from_store
from tasks.registry import stage
from tasks.stage import execute

EXPERIMENT = "ling26-publish-stage-test"
CURATE_REPORT = {
    "tables": {"eval": {"rows_in": 20, "rows_kept": 20, "rows_quarantined": 0, "quarantined_by_rule": {}}},
    "suites": [{"suite": "ling26.eval", "success": True, "evaluated": 7, "failed": []}],
    "decontamination": {"ngram": 8},
}
CHECKPOINT_STAGES = ("pretrain", "migrate", "post_train", "kpop_rl", "distill")


def comparison(checkpoints):
    return pd.DataFrame(
        [
            {"checkpoint": name, "family": family, "metric": "accuracy", "value": value, "n": 10}
            for name in checkpoints
            for family, value in (("math", 0.5), ("all", 0.4))
        ]
    )


@pytest.fixture
def world(tmp_path, tracking_uri, checkpoint, monkeypatch):
    """Stage folders under a data dir, and a parent run with a finished run per upstream stage."""
    monkeypatch.setenv("LING26_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LING26_STATE_DIR", str(tmp_path / "state"))
    folders = {name: tmp_path / "data" / name for name in ("curate", *CHECKPOINT_STAGES, "evaluate")}
    folders["curate"].mkdir(parents=True)
    for name in CHECKPOINT_STAGES:
        shutil.copytree(checkpoint, folders[name] / "checkpoint")
    folders["evaluate"].mkdir()
    comparison(CHECKPOINT_STAGES).to_parquet(folders["evaluate"] / "comparison.parquet")
    cfg = tiny_cpu()
    lineage = dataclasses.replace(cfg.lineage, experiment=EXPERIMENT, tracking_uri=tracking_uri, dvc=False)
    publish = dataclasses.replace(
        cfg.publish, dry_run_dir=str(tmp_path / "hub"), max_shard_bytes=2_000_000, allow_dirty=True
    )
    cfg = dataclasses.replace(cfg, lineage=lineage, publish=publish)
    common = dict(experiment=EXPERIMENT, configured_uri=tracking_uri, config={"seed": 1}, config_hash="c" * 16, seed=1)
    parent = open_pipeline_run(profile="tiny_cpu", **common)
    run_ids = {}
    for name in folders:
        with stage_run(name, parent_run_id=parent, **common) as run:
            run.set_tags({f"dvc.data/{name}": f"{name}-md5.dir"})
            if name == "curate":
                run.log_dict(CURATE_REPORT, "contract_report.json")
            if name == "migrate":
                run.set_tags({"parity_gate": "passed"})
            if name == "post_train":
                run.log_metrics(
                    contract_metrics(
                        {"pairs": {"rows_in": 3, "rows_kept": 3, "rows_quarantined": 0, "quarantined_by_rule": {}}}
                    )
                )
            if name == "evaluate":
                run.set_tags({"evaluation_gate": "passed"})
            run_ids[name] = run.run_id
    reports = [json.dumps({"stage": name, "mlflow_run_id": run_id}) for name, run_id in run_ids.items()]
    return cfg, folders, parent, run_ids, reports


def write_verdict(folders, *, passed: bool, checkpoint: str = "post_train") -> None:
    reasons = [] if passed else ["accuracy[all] = 0.4 < min 0.9 (short by 0.5)"]
    verdict = {"checkpoint": checkpoint, "previous": "migrate", "passed": passed, "reasons": reasons, "checks": []}
    (folders["evaluate"] / "gate_verdict.json").write_text(json.dumps(verdict))


def test_the_gated_checkpoint_is_released_with_every_stage_run_linked(world, tmp_path):
    cfg, folders, parent, run_ids, reports = world
    write_verdict(folders, passed=True)
    report, result = execute(stage("publish"), cfg, parent, folders, {"stage_reports": json.dumps(reports)})
    client = mlflow.MlflowClient()
    run = client.get_run(report["mlflow_run_id"])
    version = client.get_model_version(cfg.lineage.registered_model, run.data.tags["publish.model_version"])
    assert version.run_id == run.info.run_id
    aliases = client.get_registered_model(cfg.lineage.registered_model).aliases
    assert aliases.get("champion") == version.version
    assert version.tags["dirty_allowed"] == str(git_state()["git_dirty"])
    card = (tmp_path / "data" / "publish" / "hf_model" / "README.md").read_text()
    assert all(run_id in card for run_id in run_ids.values()) and parent in card
    hub_repo = tmp_path / "hub" / cfg.publish.repo_id
    assert (hub_repo / "README.md").read_text() == card
    assert result.summary_metrics["publish.weight_files"] >= 2


def test_a_failed_evaluation_gate_is_refused_naming_its_reasons(world):
    cfg, folders, parent, _, reports = world
    write_verdict(folders, passed=False)
    with pytest.raises(StageRefused, match=r"evaluation gate failed .*accuracy\[all\] = 0\.4 < min 0\.9"):
        execute(stage("publish"), cfg, parent, folders, {"stage_reports": json.dumps(reports)})
    assert not mlflow.MlflowClient().search_registered_models()


def test_run_alone_each_stage_run_is_found_by_the_hash_dvc_lock_records(world):
    _, _, _, run_ids, _ = world
    client = mlflow.MlflowClient()
    lock = {f"data/{name}": f"{name}-md5.dir" for name in run_ids}
    assert stage_runs_from_store(client, EXPERIMENT, list(run_ids), lock) == run_ids
    lock["data/migrate"] = "another-md5.dir"
    assert stage_runs_from_store(client, EXPERIMENT, ["migrate"], lock) == {"migrate": ""}
    assert stage_runs_from_store(client, EXPERIMENT, ["migrate"], {}) == {"migrate": run_ids["migrate"]}
