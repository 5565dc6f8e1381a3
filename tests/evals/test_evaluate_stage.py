"""The evaluation stage end to end on stage-shaped folders: every checkpoint in the comparison table, the
outputs contracted, the gate's verdict a metric, a tag and an artifact; a degraded last checkpoint refused
with the failing checks named, after everything was recorded."""

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from configs.evaluation import EvalGateConfig, LmEvalConfig, RetrievalConfig
from configs.pipeline import tiny_cpu
from corpus.shards import write_shards
from data_contracts.evaluation import ComparisonRow, RetrievalRow
from evals.gate import GateFailed
from evals.tasks import frame_from_tasks
from lineage.refusal import StageRefused


@pytest.fixture(scope="module")
def curated(world, tmp_path_factory) -> Path:
    """A curate-stage folder holding what evaluation reads: the eval prompts and the held-out shards."""
    folder = tmp_path_factory.mktemp("curate")
    frame_from_tasks(world.tasks).to_parquet(folder / "eval.parquet", index=False)
    entries = write_shards(world.heldout_tokens, folder / "shards", split="heldout", shard_tokens=1 << 16)
    (folder / "shards" / "index.json").write_text(json.dumps(entries))
    return folder


def stage_folder(root: Path, name: str, checkpoint: Path) -> Path:
    shutil.copytree(checkpoint, root / name / "checkpoint")
    return root / name


def pipeline_cfg(world, tmp_path: Path, gate: EvalGateConfig):
    cfg = tiny_cpu()
    evaluate = dataclasses.replace(
        cfg.evaluate,
        prompts_per_family=3,
        max_new_tokens=64,
        pass_k=(1, 2),
        samples_per_prompt=2,
        heldout_seq_len=32,
        heldout_windows=4,
        retrieval=RetrievalConfig(lengths=(96,), depths=(0.0,), samples_per_cell=1, max_new_tokens=4),
        lm_eval=LmEvalConfig(local_task=False),
        gate=gate,
    )
    lineage = dataclasses.replace(cfg.lineage, dvc=False, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    curate = dataclasses.replace(cfg.curate, vocab_size=world.model_cfg.vocab_size)
    return dataclasses.replace(cfg, model=world.model_cfg, curate=curate, evaluate=evaluate, lineage=lineage)


GATE = EvalGateConfig(min_accuracy={"all": 0.9}, max_accuracy_regression=0.2)


def test_a_passing_run_compares_every_checkpoint_and_records_the_verdict(world, curated, tmp_path, monkeypatch):
    import mlflow

    from tasks.registry import stage
    from tasks.stage import execute

    monkeypatch.setenv("LING26_DATA_DIR", str(tmp_path / "data"))
    cfg = pipeline_cfg(world, tmp_path, GATE)
    inputs = {
        "curate": curated,
        "migrate": stage_folder(tmp_path, "migrate", world.checkpoint),
        "post_train": stage_folder(tmp_path, "post_train", world.checkpoint),
    }
    report, result = execute(stage("evaluate"), cfg, None, inputs, {})
    out = tmp_path / "data" / "evaluate"
    table = ComparisonRow.validate(pd.read_parquet(out / "comparison.parquet"))
    assert list(dict.fromkeys(table["checkpoint"])) == ["migrate", "post_train"]
    RetrievalRow.validate(pd.read_parquet(out / "retrieval.parquet"))
    verdict = json.loads((out / "gate_verdict.json").read_text())
    assert verdict["passed"] and verdict["checkpoint"] == "post_train" and verdict["previous"] == "migrate"
    assert result.summary_metrics["gate.passed"] == 1.0
    run = mlflow.MlflowClient().get_run(report["mlflow_run_id"])
    assert run.data.tags["evaluation_gate"] == "passed" and run.data.metrics["all.accuracy"] >= 0.9
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "evaluation")}
    assert "evaluation/gate_verdict.json" in artifacts


def test_a_degraded_last_checkpoint_is_refused_after_its_numbers_are_recorded(
    world, noisy_checkpoint, curated, tmp_path, monkeypatch
):
    import mlflow

    from tasks.registry import stage
    from tasks.stage import execute

    monkeypatch.setenv("LING26_DATA_DIR", str(tmp_path / "data"))
    cfg = pipeline_cfg(world, tmp_path, GATE)
    inputs = {
        "curate": curated,
        "migrate": stage_folder(tmp_path, "migrate", world.checkpoint),
        "post_train": stage_folder(tmp_path, "post_train", noisy_checkpoint),
    }
    with pytest.raises(GateFailed, match=r"accuracy\[all\] = .* < min 0\.9 \(short by") as refused:
        execute(stage("evaluate"), cfg, None, inputs, {})
    assert isinstance(refused.value, StageRefused)
    failed = {(c.metric, c.family) for c in refused.value.verdict.failures}
    assert ("accuracy", "all") in failed and ("accuracy_drop", "all") in failed
    verdict = json.loads((tmp_path / "data" / "evaluate" / "gate_verdict.json").read_text())
    assert not verdict["passed"] and verdict["reasons"]
    runs = mlflow.search_runs(experiment_names=[cfg.lineage.experiment], output_format="list")
    assert runs[0].info.status == "FAILED" and runs[0].data.tags["evaluation_gate"] == "failed"
    assert runs[0].data.metrics["gate.passed"] == 0.0
