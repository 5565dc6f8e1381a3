"""The MLflow Model Registry side of a release: the folder logged as an artifact of the publishing run, one
registered model version per publish whose source is that artifact, tags with the data and code versions, and
the aliases ``candidate`` (registered) and ``champion`` (passed the gate and went out).

The folder is registered as a plain artifact (``runs:/<run_id>/hf_model``) rather than through
``mlflow.transformers``: logging a transformers flavour loads the model and builds a pipeline, which for a
``trust_remote_code`` architecture means executing the shipped code at registration time, for nothing the
registry needs. ``mlflow.artifacts.download_artifacts("models:/<name>@champion")`` returns the folder as is,
ready for ``from_pretrained``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from publishing.gate import GateVerdict
from publishing.hf_folder import HfFolder
from publishing.hub import HubResult
from publishing.provenance import ReleaseLineage

ARTIFACT_PATH = "hf_model"
LINEAGE_ARTIFACT = "release/lineage.json"
CANDIDATE = "candidate"
CHAMPION = "champion"


@dataclass(frozen=True, kw_only=True)
class RegisteredVersion:
    name: str
    version: str
    source: str
    run_id: str


def version_tags(lineage: ReleaseLineage, verdict: GateVerdict, folder: HfFolder) -> dict[str, str]:
    """Data versions (``dvc.<path>`` md5, as on the stage runs), code version, and where the numbers came from."""
    tags = {f"dvc.{path}": md5 for path, md5 in lineage.dvc_outputs().items()}
    tags.update({f"stage.{s.stage}.run_id": s.run_id for s in lineage.stages})
    tags.update(
        {
            "git_sha": lineage.git_sha,
            "git_dirty": str(lineage.git_dirty),
            "dirty_allowed": str(verdict.dirty_allowed),
            "pipeline_run_id": lineage.parent_run_id,
            "flyte_execution_id": lineage.flyte_execution_id,
            "eval_gate": "passed" if lineage.eval_gate.passed else "failed",
            "weights_sha256": folder.weights_sha256,
            "architecture": folder.architecture,
        }
    )
    return tags


def log_release_artifacts(client: Any, run_id: str, folder: Path, lineage: ReleaseLineage) -> None:
    client.log_artifacts(run_id, str(folder), ARTIFACT_PATH)
    client.log_dict(run_id, lineage.as_dict(), LINEAGE_ARTIFACT)


def register_candidate(client: Any, *, name: str, run_id: str, tags: dict[str, str]) -> RegisteredVersion:
    """A new version of ``name`` from the run's ``hf_model`` artifact, tagged, with the ``candidate`` alias."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(name, description="Ling-2.6 reproduction checkpoints (ling26-pipeline)")
    except MlflowException as err:
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    source = f"runs:/{run_id}/{ARTIFACT_PATH}"
    version = client.create_model_version(name, source, run_id=run_id, tags=tags)
    client.set_registered_model_alias(name, CANDIDATE, version.version)
    return RegisteredVersion(name=name, version=str(version.version), source=source, run_id=run_id)


def promote_champion(client: Any, version: RegisteredVersion, hub: HubResult) -> None:
    """Record where the release went, then move ``champion`` to it (from whichever version held it)."""
    for key, value in {"hub.mode": hub.mode, "hub.repo_id": hub.repo_id, "hub.revision": hub.revision}.items():
        client.set_model_version_tag(version.name, version.version, key, value)
    client.set_registered_model_alias(version.name, CHAMPION, version.version)
