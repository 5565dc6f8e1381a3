import json
from pathlib import Path

import pandas as pd

from configs import config_hash, resolve, to_dict
from lineage.runs import close_pipeline_run, open_pipeline_run, stage_run


def test_parent_and_nested_stage_runs_carry_manifest_params_and_datasets(tmp_path):
    import mlflow

    cfg = resolve("tiny_cpu", {"seed": 99, "lineage.experiment": "lineage-test"})
    parent_id = open_pipeline_run(
        experiment="lineage-test",
        configured_uri=None,
        profile=cfg.profile,
        config_hash=config_hash(cfg),
        config=to_dict(cfg),
        seed=cfg.seed,
    )
    frame = pd.DataFrame({"a": [1, 2, 3]})
    (tmp_path / "t.parquet").write_bytes(b"")
    files = tmp_path / "shards"
    files.mkdir()
    (files / "x.bin").write_bytes(b"\x00\x01")
    with stage_run(
        "curate",
        parent_run_id=parent_id,
        experiment="lineage-test",
        configured_uri=None,
        config=to_dict(cfg),
        config_hash=config_hash(cfg),
        seed=99,
    ) as run:
        digest = run.log_table_input(frame, name="t", source=tmp_path / "t.parquet", context="output")
        file_digest = run.log_file_input(files, name="shards", context="training")
        run.log_metrics({"m": 1.5}, step=0)
    close_pipeline_run(parent_id, configured_uri=None, summary={"stages": 1})

    client = mlflow.MlflowClient()
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["seed"] == "99"
    child = client.get_run(run.run_id)
    assert child.data.tags["mlflow.parentRunId"] == parent_id
    assert child.data.tags["config_hash"] == config_hash(cfg)
    assert child.data.metrics["m"] == 1.5
    manifest = json.loads(Path(client.download_artifacts(run.run_id, "manifest.json")).read_text())
    assert manifest["seed"] == 99 and "torch" in manifest["packages"] and "git_dirty" in manifest
    digests = {d.dataset.name: d.dataset.digest for d in child.inputs.dataset_inputs}
    assert digests["t"] == digest and digests["shards"] == file_digest[:16]
    # The code state is the pipeline's, recorded once at its start; the experiment opens as model training.
    assert (child.data.tags["git_sha"], child.data.tags["git_dirty"]) == (
        parent.data.tags["git_sha"],
        parent.data.tags["git_dirty"],
    )
    assert client.get_experiment_by_name("lineage-test").tags["mlflow.experimentKind"] == "custom_model_development"


def test_failed_stage_marks_its_run_failed():
    import mlflow
    import pytest

    cfg = resolve("tiny_cpu", {"lineage.experiment": "lineage-test"})
    with (
        pytest.raises(RuntimeError, match="boom"),
        stage_run(
            "curate",
            parent_run_id=None,
            experiment="lineage-test",
            configured_uri=None,
            config=to_dict(cfg),
            config_hash=config_hash(cfg),
            seed=1,
        ) as run,
    ):
        raise RuntimeError("boom")
    assert mlflow.MlflowClient().get_run(run.run_id).info.status == "FAILED"


def _stage(cfg, name="post_train"):
    return stage_run(
        name,
        parent_run_id=None,
        experiment="lineage-test",
        configured_uri=None,
        config=to_dict(cfg),
        config_hash=config_hash(cfg),
        seed=cfg.seed,
    )


def test_child_runs_nest_one_at_a_time_under_a_stage_that_stays_active():
    import mlflow

    from lineage.runs import ChildRuns

    cfg = resolve("tiny_cpu", {"lineage.experiment": "lineage-test"})
    with _stage(cfg) as run:
        children = ChildRuns(run.run_id, tag="ling26.phase")
        children.log_metrics("sft", {"loss": 2.0}, step=1)
        children.log_metrics("sft", {"loss": 1.5}, step=2)
        run.log_metrics({"stage_metric": 1.0})  # the fluent API still logs into the stage
        children.log_metrics("rl", {"reward": 0.25}, step=1)
        first_sft = children.run_ids["sft"]
        children.close("FINISHED")
    client = mlflow.MlflowClient()
    assert set(children.run_ids) == {"sft", "rl"} and children.run_ids["sft"] == first_sft
    for name, run_id in children.run_ids.items():
        child = client.get_run(run_id)
        assert child.info.status == "FINISHED" and child.info.run_name == name
        assert child.data.tags["mlflow.parentRunId"] == run.run_id and child.data.tags["ling26.phase"] == name
    assert [m.value for m in client.get_metric_history(first_sft, "loss")] == [2.0, 1.5]
    assert client.get_run(children.run_ids["rl"]).data.metrics == {"reward": 0.25}
    assert client.get_run(run.run_id).data.metrics == {"stage_metric": 1.0}


def test_an_open_child_run_can_end_failed():
    import mlflow

    from lineage.runs import ChildRuns

    cfg = resolve("tiny_cpu", {"lineage.experiment": "lineage-test"})
    with _stage(cfg) as run:
        children = ChildRuns(run.run_id, tag="ling26.phase")
        children.log_metrics("rl", {"reward": 0.0}, step=1)
        children.close("FAILED")
        children.close("FAILED")  # nothing open: a no-op
    assert mlflow.MlflowClient().get_run(children.run_ids["rl"]).info.status == "FAILED"
