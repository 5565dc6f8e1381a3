"""One release, start to end: the gate, the Hugging Face folder and its card, the MLflow registry, the Hub.

The order puts every refusal before any side effect (gate, checkpoint checks, token), registers before
uploading (so a failed upload leaves a ``candidate`` version that says what was attempted) and promotes to
``champion`` only once the release is out.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from configs.publish import PublishConfig
from publishing.card import render_card, write_card
from publishing.gate import GateVerdict, require_release
from publishing.hf_folder import HfFolder, build_hf_folder
from publishing.hub import HubResult, publish_folder, token_from_env
from publishing.provenance import ReleaseLineage
from publishing.registry import (
    RegisteredVersion,
    log_release_artifacts,
    promote_champion,
    register_candidate,
    version_tags,
)


@dataclass(frozen=True, kw_only=True)
class ReleaseResult:
    folder: HfFolder
    verdict: GateVerdict
    model_version: RegisteredVersion
    hub: HubResult


def publish_release(
    *,
    checkpoint: str | Path,
    lineage: ReleaseLineage,
    config: PublishConfig,
    run_id: str,
    registered_model: str,
    work_dir: str | Path,
    dry_run_root: str | Path | None = None,
) -> ReleaseResult:
    """Gate, build, register and publish the checkpoint folder ``checkpoint``.

    ``run_id`` is the publishing stage's own MLflow run in ``lineage.tracking_uri`` (the folder is logged there
    and the registry version points at it); ``work_dir`` receives the built folder (``work_dir/hf_model``,
    rebuilt each call); a dry run writes to ``dry_run_root`` (default ``config.dry_run_dir``, else
    ``<state dir>/hub``). Raises ``PublishRefused`` naming every reason before anything is written.
    """
    verdict = require_release(lineage, config)
    if config.mode == "hub":
        token_from_env()
    out = Path(work_dir) / "hf_model"
    if out.exists():
        shutil.rmtree(out)
    folder = build_hf_folder(
        checkpoint, out, max_shard_bytes=config.max_shard_bytes, max_new_tokens=config.max_new_tokens
    )
    card = render_card(
        lineage=lineage,
        verdict=verdict,
        folder=folder,
        config=config,
        publish_run_id=run_id,
        registered_model=registered_model,
    )
    write_card(card, folder.path)

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=lineage.tracking_uri, registry_uri=lineage.tracking_uri)
    log_release_artifacts(client, run_id, folder.path, lineage)
    version = register_candidate(
        client, name=registered_model, run_id=run_id, tags=version_tags(lineage, verdict, folder)
    )
    hub = publish_folder(
        folder.path,
        config,
        commit_message=f"Release {folder.weights_sha256[:12]} (pipeline run {lineage.parent_run_id})",
        dry_run_root=Path(dry_run_root or config.dry_run_dir or _default_dry_run_root()),
    )
    promote_champion(client, version, hub)
    for key, value in {
        "publish.hub_revision": hub.revision,
        "publish.hub_location": hub.location,
        "publish.model_version": version.version,
        "publish.weights_sha256": folder.weights_sha256,
    }.items():
        client.set_tag(run_id, key, value)
    return ReleaseResult(folder=folder, verdict=verdict, model_version=version, hub=hub)


def _default_dry_run_root() -> Path:
    from lineage.paths import state_dir

    return state_dir() / "hub"
