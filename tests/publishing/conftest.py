"""Publishing tests: a tiny exported checkpoint, a complete lineage, an MLflow store per test, and a Hugging Face
client that talks the legacy LFS protocol to the fake Hub with its cache and token files under tmp.

``huggingface_hub`` reads ``HF_HUB_DISABLE_XET`` and its paths once, at import; another test module may have
imported it first, so the fixture also sets the module constants the client reads at call time.
"""

import os

os.environ["HF_HUB_DISABLE_XET"] = "1"

import dataclasses
import json
import shutil
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from publishing_shapes import SHARD_BYTES

from configs.model import tiny_model
from corpus.tokenizer import save_tokenizer, train_tokenizer
from model.export_hybrid import export_checkpoint
from model.hybrid import HybridForCausalLM
from model.ling2 import Ling2ForCausalLM
from publishing import (
    ContractTable,
    EvalGate,
    EvalMetric,
    PublishConfig,
    ReleaseLineage,
    StageRecord,
    SuiteResult,
)

torch.set_num_threads(1)

STAGES = ("curate", "pretrain", "migrate", "post_train", "kpop_rl", "distill", "evaluate")


@pytest.fixture(autouse=True)
def isolated_clients(tmp_path, monkeypatch):
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HOME", str(home))
    for name, path in (
        ("HF_HOME", home),
        ("HF_HUB_CACHE", home / "hub"),
        ("HF_TOKEN_PATH", home / "token"),
        ("HF_STORED_TOKENS_PATH", home / "stored_tokens"),
    ):
        monkeypatch.setattr(constants, name, str(path))
    monkeypatch.delenv("HF_TOKEN", raising=False)
    # mlflow.set_tracking_uri (lineage.runs.configure calls it) exports MLFLOW_TRACKING_URI, which
    # lineage.paths.tracking_uri prefers over a configured URI: without this the next test writes to this one's store.
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return home


def write_checkpoint(model, folder: Path) -> Path:
    """A checkpoint folder as the training stages leave it: the official layout plus the tokenizer files."""
    export_checkpoint(model.eval(), folder)
    texts = ["def add(a, b):\n    return a + b\n", "12 + 30 = 42", "the quick brown fox"] * 20
    save_tokenizer(train_tokenizer(texts, vocab_size=300), folder)
    return folder


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return write_checkpoint(Ling2ForCausalLM(tiny_model()), tmp_path_factory.mktemp("base") / "checkpoint")


@pytest.fixture(scope="session")
def hybrid_checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = HybridForCausalLM(dataclasses.replace(tiny_model(), initializer_range=0.08))
    return write_checkpoint(model, tmp_path_factory.mktemp("hybrid") / "checkpoint")


@pytest.fixture(scope="session")
def empty_mlflow_db(tmp_path_factory) -> Path:
    """An MLflow sqlite store with its schema migrated (seconds of work), copied by each test that needs one."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    mlflow.MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def tracking_uri(tmp_path, empty_mlflow_db) -> str:
    shutil.copyfile(empty_mlflow_db, tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def publish_run(tracking_uri, tmp_path) -> str:
    """The publishing stage's own MLflow run."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment = client.create_experiment("publish", artifact_location=(tmp_path / "mlartifacts").as_uri())
    return client.create_run(experiment, run_name="publish").info.run_id


def make_lineage(tracking_uri: str, **overrides) -> ReleaseLineage:
    stages = tuple(
        StageRecord(
            stage=stage,
            run_id=f"{stage}-run-{i:02d}" + "0" * 20,
            git_sha="a" * 40,
            git_dirty=False,
            flyte_execution_id="ling26:development:f0123",
            outputs={f"data/{stage}": f"{i:x}" * 32 + ".dir"},
            gates={"migrate": {"parity_gate": "passed"}, "evaluate": {"evaluation_gate": "passed"}}.get(stage, {}),
        )
        for i, stage in enumerate(STAGES, start=1)
    )
    values = dict(
        tracking_uri=tracking_uri,
        parent_run_id="parent" + "0" * 26,
        git_sha="a" * 40,
        git_dirty=False,
        flyte_execution_id="ling26:development:f0123",
        stages=stages,
        eval_gate=EvalGate(
            passed=True,
            metrics=(
                EvalMetric(task="math", metric="accuracy", value=0.625, dataset="ling26/eval"),
                EvalMetric(task="math", metric="mean_tokens_correct", value=17.5, dataset="ling26/eval"),
                EvalMetric(task="code", metric="accuracy", value=0.25, dataset="ling26/eval"),
            ),
            run_id="eval-run",
        ),
        contracts=(
            ContractTable(
                stage="curate",
                table="sft",
                rows_in=120,
                rows_kept=117,
                rows_quarantined=3,
                quarantined_by_rule={"response_too_long": 2, "bad_family": 1},
            ),
            ContractTable(stage="post_train", table="pairs", rows_in=40, rows_kept=40, rows_quarantined=0),
        ),
        suites=(SuiteResult(stage="curate", suite="ling26.sft", success=True, evaluated=9),),
        decontamination={"ngram": 8, "eval_content_ngrams": 1234, "template_ngrams_ignored": 56},
        mismatch={"mean_abs_logprob_gap": 1.5e-5},
    )
    values.update(overrides)
    return ReleaseLineage(**values)


@pytest.fixture
def make_release_lineage(tracking_uri):
    """A complete lineage in this test's MLflow store; keyword overrides replace fields."""
    return lambda **overrides: make_lineage(tracking_uri, **overrides)


@pytest.fixture
def lineage(make_release_lineage) -> ReleaseLineage:
    return make_release_lineage()


@pytest.fixture
def config(tmp_path) -> PublishConfig:
    return PublishConfig(
        repo_id="ling26-org/ling26-tiny",
        max_shard_bytes=SHARD_BYTES,
        dry_run_dir=str(tmp_path / "dry_run"),
        base_model="inclusionAI/Ling-mini-2.0",
    )


# The publish stage's world: stage-shaped folders and stage runs written by the pipeline's own lineage code.
STAGE_EXPERIMENT = "ling26-publish-stage-test"
CURATE_REPORT = {
    "tables": {"eval": {"rows_in": 20, "rows_kept": 20, "rows_quarantined": 0, "quarantined_by_rule": {}}},
    "suites": [{"suite": "ling26.eval", "success": True, "evaluated": 7, "failed": []}],
    "decontamination": {"ngram": 8},
}
CHECKPOINT_STAGES = ("pretrain", "migrate", "post_train", "kpop_rl", "distill")


def comparison(checkpoints):
    import pandas as pd

    return pd.DataFrame(
        [
            {"checkpoint": name, "family": family, "metric": "accuracy", "value": value, "n": 10}
            for name in checkpoints
            for family, value in (("math", 0.5), ("all", 0.4))
        ]
    )


@pytest.fixture
def world(tmp_path, tracking_uri, checkpoint, monkeypatch):
    """Stage folders under a data dir, and a parent run with a finished run per upstream stage.

    Returns ``(cfg, folders, parent_run_id, run_ids, stage_reports)``.
    """
    # Imported here, not at the top: the pipeline config and lineage code are only for the tests that use them.
    from configs.pipeline import tiny_cpu
    from lineage.contracts import contract_metrics
    from lineage.runs import open_pipeline_run, stage_run

    monkeypatch.setenv("LING26_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LING26_STATE_DIR", str(tmp_path / "state"))
    folders = {name: tmp_path / "data" / name for name in ("curate", *CHECKPOINT_STAGES, "evaluate")}
    folders["curate"].mkdir(parents=True)
    for name in CHECKPOINT_STAGES:
        shutil.copytree(checkpoint, folders[name] / "checkpoint")
    folders["evaluate"].mkdir()
    comparison(CHECKPOINT_STAGES).to_parquet(folders["evaluate"] / "comparison.parquet")
    cfg = tiny_cpu()
    lineage = dataclasses.replace(cfg.lineage, experiment=STAGE_EXPERIMENT, tracking_uri=tracking_uri, dvc=False)
    publish = dataclasses.replace(
        cfg.publish, dry_run_dir=str(tmp_path / "hub"), max_shard_bytes=2_000_000, allow_dirty=True
    )
    cfg = dataclasses.replace(cfg, lineage=lineage, publish=publish)
    common = dict(
        experiment=STAGE_EXPERIMENT, configured_uri=tracking_uri, config={"seed": 1}, config_hash="c" * 16, seed=1
    )
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


def _write_verdict(folders, *, passed: bool, checkpoint: str = "post_train") -> None:
    reasons = [] if passed else ["accuracy[all] = 0.4 < min 0.9 (short by 0.5)"]
    verdict = {"checkpoint": checkpoint, "previous": "migrate", "passed": passed, "reasons": reasons, "checks": []}
    (folders["evaluate"] / "gate_verdict.json").write_text(json.dumps(verdict))


@pytest.fixture
def write_verdict():
    """Writes the evaluation gate's verdict into the world's evaluate folder (a fixture because test modules
    cannot import this conftest by name: tests/conftest.py shares its module name)."""
    return _write_verdict


class PublishedRelease(NamedTuple):
    cfg: object
    parent_run_id: str
    stage_run_ids: dict
    report: dict
    result: object


@pytest.fixture
def published_release(world) -> PublishedRelease:
    """The world after the evaluation gate passed and the publish stage ran: a registered model version with the
    aliases candidate and champion, whose source run is the publish stage's run with its lineage tags."""
    from tasks.registry import stage
    from tasks.stage import execute

    cfg, folders, parent, run_ids, reports = world
    _write_verdict(folders, passed=True)
    report, result = execute(stage("publish"), cfg, parent, folders, {"stage_reports": json.dumps(reports)})
    return PublishedRelease(cfg, parent, run_ids, report, result)
