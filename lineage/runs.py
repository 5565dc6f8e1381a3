"""MLflow runs: one parent run per pipeline execution, one nested run per stage.

The parent run id travels between Flyte tasks as a plain string input that the stage caches ignore, so
nesting works the same in local execution (one process) and on a cluster (one pod per task).
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lineage.manifest import build_manifest, sha256_file
from lineage.paths import artifact_root, tracking_uri

PIPELINE_TAG = "ling26.pipeline"
STAGE_TAG = "ling26.stage"
# The MLflow UI opens an experiment by its kind; without the tag MLflow 3 guesses, and guessed the GenAI view
# (traces, prompts) for ours. Ours trains models.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"


def configure(experiment: str, configured_uri: str | None = None) -> str:
    """Point MLflow at the store and make sure the experiment exists; returns the experiment id."""
    import mlflow

    uri = tracking_uri(configured_uri)
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        experiment_id = found.experiment_id
    else:
        location = artifact_root() if uri.startswith("sqlite:") else None
        experiment_id = client.create_experiment(experiment, artifact_location=location)
    if found is None or found.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def open_pipeline_run(
    *, experiment: str, configured_uri: str | None, profile: str, config_hash: str, config: Mapping[str, Any], seed: int
) -> str:
    """Start the parent run, log the whole config and manifest, and leave it RUNNING for the stages."""
    import mlflow

    experiment_id = configure(experiment, configured_uri)
    manifest = build_manifest(config_hash=config_hash, seed=seed, stage="pipeline")
    # Created through the client, never made the active run: stages in other processes nest under it.
    client = mlflow.MlflowClient()
    run = client.create_run(
        experiment_id,
        run_name=f"pipeline-{profile}-{config_hash[:8]}",
        tags={
            PIPELINE_TAG: "parent",
            "profile": profile,
            "config_hash": config_hash,
            "git_sha": manifest["git_sha"],
            "git_dirty": str(manifest["git_dirty"]),
            "flyte_execution_id": manifest["flyte_execution_id"],
        },
    )
    run_id = run.info.run_id
    for key, value in _flat_params(config).items():
        client.log_param(run_id, key, value)
    client.log_dict(run_id, dict(config), "config.json")
    client.log_dict(run_id, manifest, "manifest.json")
    return run_id


def close_pipeline_run(run_id: str, *, configured_uri: str | None, summary: Mapping[str, Any]) -> None:
    import mlflow

    mlflow.set_tracking_uri(tracking_uri(configured_uri))
    client = mlflow.MlflowClient()
    client.log_dict(run_id, dict(summary), "pipeline_summary.json")
    for key, value in summary.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            client.log_metric(run_id, key, float(value))
    client.set_terminated(run_id, status="FINISHED")


def _flat_params(config: Mapping[str, Any]) -> dict[str, str]:
    from configs.base import flatten

    # MLflow caps a param value at 6000 chars; config values are far below that.
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in flatten(dict(config)).items()}


class StageRun:
    """Handle a stage uses to log into its nested run."""

    def __init__(self, run_id: str):
        self.run_id = run_id

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import mlflow

        mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_dict(self, data: Mapping[str, Any] | list[Any], artifact_file: str) -> None:
        import mlflow

        mlflow.log_dict(data, artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        import mlflow

        mlflow.log_text(text, artifact_file)

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        import mlflow

        mlflow.log_artifact(str(path), artifact_path)

    def log_figure(self, figure: Any, artifact_file: str) -> None:
        import mlflow

        mlflow.log_figure(figure, artifact_file)

    def log_table_input(self, frame: Any, *, name: str, source: Path, context: str) -> str:
        """Log a table as a dataset input of this run, its digest MLflow's content hash; returns the digest."""
        import mlflow

        dataset = mlflow.data.from_pandas(frame, source=str(source), name=name)
        mlflow.log_input(dataset, context=context)
        return dataset.digest

    def log_file_input(self, path: Path, *, name: str, context: str) -> str:
        """Log a non-tabular dataset (token shards, a tokenizer) with its sha256 as digest."""
        import mlflow
        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        digest = _combined_sha256(files)
        dataset = MetaDataset(source=resolve_dataset_source(str(path)), name=name, digest=digest[:16])
        mlflow.log_input(dataset, context=context)
        return digest

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        import mlflow

        mlflow.set_tags({k: str(v) for k, v in tags.items()})


class ChildRuns:
    """Runs nested one level below ``parent_run_id`` (e.g. a stage's phases), logged by run id through the
    client, so the parent stays the active run of the fluent API; one child is open at a time."""

    def __init__(self, parent_run_id: str, tag: str) -> None:
        import mlflow

        self.client = mlflow.MlflowClient()
        self.parent_run_id = parent_run_id
        self.experiment_id = self.client.get_run(parent_run_id).info.experiment_id
        self.tag = tag
        self.run_ids: dict[str, str] = {}
        self.open: str | None = None

    def switch_to(self, name: str) -> str:
        """The run id of child ``name``, opened now (closing the open one) if it is not the open one."""
        if self.open != name:
            self.close("FINISHED")
            tags = {"mlflow.parentRunId": self.parent_run_id, "mlflow.runName": name, self.tag: name}
            run = self.client.create_run(self.experiment_id, tags=tags, run_name=name)
            self.run_ids[name], self.open = run.info.run_id, name
        return self.run_ids[name]

    def log_metrics(self, name: str, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        run_id, now = self.switch_to(name), int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    def close(self, status: str) -> None:
        if self.open is not None:
            self.client.set_terminated(self.run_ids[self.open], status=status)
            self.open = None


def _combined_sha256(files: list[Path]) -> str:
    import hashlib

    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode())
        digest.update(sha256_file(f).encode())
    return digest.hexdigest()


@contextlib.contextmanager
def stage_run(
    stage: str,
    *,
    parent_run_id: str | None,
    experiment: str,
    configured_uri: str | None,
    config: Mapping[str, Any],
    config_hash: str,
    seed: int,
) -> Iterator[StageRun]:
    """A nested run under ``parent_run_id`` (or a top-level run when a stage runs alone, e.g. via DVC).

    Logs the stage's config (flattened params), the manifest, and ends FAILED if the body raises.
    """
    import mlflow

    configure(experiment, configured_uri)
    manifest = build_manifest(config_hash=config_hash, seed=seed, stage=stage)
    if parent_run_id:
        # The code state is the pipeline's, recorded once when it started: a stage that ran later would
        # otherwise see edits made meanwhile, or another stage's outputs, and report a different tree.
        parent = mlflow.MlflowClient().get_run(parent_run_id).data.tags
        manifest.update({key: parent[key] for key in ("git_sha", "git_dirty") if key in parent})
    tags = {
        STAGE_TAG: stage,
        "config_hash": config_hash,
        "git_sha": manifest["git_sha"],
        "git_dirty": str(manifest["git_dirty"]),
        "flyte_execution_id": manifest["flyte_execution_id"],
    }
    with mlflow.start_run(run_name=stage, tags=tags, parent_run_id=parent_run_id or None) as run:
        mlflow.log_params(_flat_params(config))
        mlflow.log_dict(manifest, "manifest.json")
        yield StageRun(run.info.run_id)


def write_json(path: Path, data: Any) -> Path:
    """Atomic JSON write (temp file in the same folder + rename), sorted keys for byte-stable output."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False, suffix=".tmp", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
        tmp = Path(fh.name)
    tmp.replace(path)
    return path
