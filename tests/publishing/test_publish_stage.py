"""The publish stage on stage-shaped folders and stage runs written by the pipeline's own lineage code: it
releases the checkpoint the evaluation gate judged, links every stage run, and refuses a failed gate after
recording why; run alone, it finds each stage's run in the store by the DVC hash dvc.lock records."""

import json

import mlflow
import pytest

from lineage.manifest import git_state
from lineage.refusal import StageRefused
from publishing.from_stages import stage_runs_from_store
from tasks.registry import stage
from tasks.stage import execute

# The stage world (stage folders, a parent run with a run per stage) and the published release are fixtures in
# conftest.py, shared with the browser test that reads the same store through the MLflow UI.


def test_the_gated_checkpoint_is_released_with_every_stage_run_linked(published_release, tmp_path):
    cfg, parent, run_ids, report, result = published_release
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


def test_a_failed_evaluation_gate_is_refused_naming_its_reasons(world, write_verdict):
    cfg, folders, parent, _, reports = world
    write_verdict(folders, passed=False)
    with pytest.raises(StageRefused, match=r"evaluation gate failed .*accuracy\[all\] = 0\.4 < min 0\.9"):
        execute(stage("publish"), cfg, parent, folders, {"stage_reports": json.dumps(reports)})
    assert not mlflow.MlflowClient().search_registered_models()


def test_run_alone_each_stage_run_is_found_by_the_hash_dvc_lock_records(world):
    cfg, _, _, run_ids, _ = world
    client = mlflow.MlflowClient()
    lock = {f"data/{name}": f"{name}-md5.dir" for name in run_ids}
    assert stage_runs_from_store(client, cfg.lineage.experiment, list(run_ids), lock) == run_ids
    lock["data/migrate"] = "another-md5.dir"
    assert stage_runs_from_store(client, cfg.lineage.experiment, ["migrate"], lock) == {"migrate": ""}
    assert stage_runs_from_store(client, cfg.lineage.experiment, ["migrate"], {}) == {"migrate": run_ids["migrate"]}
