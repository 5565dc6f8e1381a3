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
