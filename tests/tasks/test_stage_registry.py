"""The one stage abstraction: every stage declared once, and the CLI, DVC and the workflow agree with it."""

import inspect
from pathlib import Path

import pytest
import yaml

from configs import PROFILES
from lineage.refusal import StageRefused
from tasks import __main__ as cli
from tasks.registry import STAGE_NAMES, stage
from tasks.stage import Stage, StageOutputs, StageResult, execute

ROOT = Path(__file__).resolve().parents[2]


def test_registry_dvc_and_workflow_list_the_same_stages_in_order():
    from workflows.pipeline import STAGES

    assert STAGES == STAGE_NAMES
    assert tuple(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]) == STAGE_NAMES


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_each_declaration_is_complete_and_reads_only_earlier_stages(name):
    declared = stage(name)
    assert declared.name == name and declared.doc
    assert all(STAGE_NAMES.index(i) < STAGE_NAMES.index(name) for i in declared.inputs)
    assert callable(declared.resolve(declared.body))
    if declared.worker_body:
        assert callable(declared.resolve(declared.worker_body))
    dvc_deps = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"][name]["deps"]
    assert {f"data/{i}" for i in declared.inputs} == {d for d in dvc_deps if d.startswith("data/")}


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_each_flyte_task_returns_the_common_outputs(name):
    import importlib

    task = getattr(importlib.import_module(f"tasks.{name}.task"), name)
    signature = inspect.signature(task.task_function)
    assert list(signature.parameters)[:2] == ["config_json", "parent_run_id"]
    assert signature.return_annotation in (StageOutputs, "StageOutputs")


def test_unknown_stage_names_the_known_ones():
    with pytest.raises(KeyError, match="curate, pretrain"):
        stage("nope")


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_cli_help_for_every_stage(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert f"writes data/{name}" in out and "--profile" in out


def test_missing_upstream_output_fails_before_any_work_and_says_what_to_run(tmp_path):
    declared = Stage(name="later", doc="d", inputs=("earlier",), body="test_stage_registry:never_called")
    with pytest.raises(FileNotFoundError, match="run the stages before it first"):
        execute(declared, PROFILES["tiny_cpu"](), None, {"earlier": tmp_path / "absent"}, {})


def never_called(ctx):
    raise AssertionError("the body ran although its input is missing")


def refusing_body(ctx):
    ctx.run.log_metrics({"measured": 1.0})
    raise StageRefused("gate: accuracy 0.1 < 0.5 (gap -0.4)")


def recording_body(ctx):
    (ctx.out_dir / "thing.txt").write_text(ctx.options["word"])
    (ctx.out_dir / "checkpoint").mkdir(exist_ok=True)
    (ctx.out_dir / "checkpoint" / "config.json").write_text('{"architectures": ["Demo"], "num_hidden_layers": 2}')
    ctx.run.log_metrics({"measured": 2.0})
    return StageResult(summary_metrics={"measured": 2.0}, deck_html="<p>deck</p>", message="made a thing")


@pytest.fixture
def isolated_state(tmp_path, monkeypatch):
    import dataclasses

    monkeypatch.setenv("LING26_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LING26_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = PROFILES["tiny_cpu"]()
    lineage = dataclasses.replace(cfg.lineage, dvc=False, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    return dataclasses.replace(cfg, lineage=lineage)


def test_execute_runs_the_body_in_its_mlflow_run_and_returns_the_report_skeleton(isolated_state):
    import mlflow

    declared = Stage(name="demo", doc="d", inputs=(), body="test_stage_registry:recording_body")
    report, result = execute(declared, isolated_state, None, {}, {"word": "hello"})
    assert set(report) == {"stage", "mlflow_run_id", "dvc", "summary_metrics"}
    assert report["stage"] == "demo" and report["summary_metrics"] == {"measured": 2.0}
    assert result.message == "made a thing"
    run = mlflow.MlflowClient().get_run(report["mlflow_run_id"])
    assert run.data.metrics["measured"] == 2.0 and run.info.status == "FINISHED"
    assert run.data.tags["ling26.stage"] == "demo"
    # The Deck is kept as an artifact, and the checkpoint is a logged model of the run with its metrics.
    client = mlflow.MlflowClient()
    deck = Path(client.download_artifacts(run.info.run_id, "deck/demo.html")).read_text()
    assert deck == "<p>deck</p>"
    models = mlflow.search_logged_models(output_format="list")
    assert [m.name for m in models] == ["demo-checkpoint"] and models[0].source_run_id == run.info.run_id
    assert models[0].tags["dvc.path"] == "data/demo/checkpoint" and models[0].params["architecture"] == "Demo"
    assert {m.key: m.value for m in models[0].metrics} == {"measured": 2.0}


def test_a_refusal_fails_the_run_after_what_was_measured_is_logged(isolated_state):
    import mlflow

    declared = Stage(name="demo", doc="d", inputs=(), body="test_stage_registry:refusing_body")
    with pytest.raises(StageRefused, match=r"gap -0\.4"):
        execute(declared, isolated_state, None, {}, {})
    runs = mlflow.search_runs(experiment_names=[isolated_state.lineage.experiment], output_format="list")
    assert runs[0].info.status == "FAILED" and runs[0].data.metrics["measured"] == 1.0
