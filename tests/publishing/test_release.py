"""A release in the default dry-run mode: the repository laid out locally as the Hub would hold it, one registered
model version per publish with data and code versions as tags, and the candidate / champion aliases."""

from pathlib import Path

import mlflow
from huggingface_hub import ModelCard

from model.export import read_state_dict
from publishing import CANDIDATE, CHAMPION, publish_release, weights_digest
from publishing.hub import tree_digest
from publishing.registry import LINEAGE_ARTIFACT

NAME = "ling26-tiny"


def release(checkpoint, lineage, config, run_id, tmp_path):
    return publish_release(
        checkpoint=checkpoint,
        lineage=lineage,
        config=config,
        run_id=run_id,
        registered_model=NAME,
        work_dir=tmp_path / "work",
    )


def test_dry_run_release_lays_out_the_repository_and_registers_it(
    checkpoint, lineage, config, tracking_uri, publish_run, tmp_path
):
    result = release(checkpoint, lineage, config, publish_run, tmp_path)

    repo = tmp_path / "dry_run" / "ling26-org" / "ling26-tiny"
    assert result.hub.mode == "dry_run" and result.hub.committed and Path(result.hub.location) == repo
    assert result.hub.revision == tree_digest(repo) == tree_digest(result.folder.path)
    assert len(result.folder.weight_files) > 1 and (repo / "model.safetensors.index.json").is_file()
    assert ModelCard.load(repo / "README.md").data.license == "apache-2.0"

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    champion = client.get_model_version_by_alias(NAME, CHAMPION)
    assert str(champion.version) == str(client.get_model_version_by_alias(NAME, CANDIDATE).version) == "1"
    assert result.model_version.version == "1"
    assert champion.source == f"runs:/{publish_run}/hf_model" and champion.run_id == publish_run
    tags = champion.tags
    for path, md5 in lineage.dvc_outputs().items():
        assert tags[f"dvc.{path}"] == md5
    assert tags["git_sha"] == lineage.git_sha and tags["git_dirty"] == "False" and tags["dirty_allowed"] == "False"
    assert tags["pipeline_run_id"] == lineage.parent_run_id and tags["eval_gate"] == "passed"
    assert tags["weights_sha256"] == result.folder.weights_sha256
    assert tags["hub.mode"] == "dry_run" and tags["hub.revision"] == result.hub.revision
    for stage in lineage.stages:
        assert tags[f"stage.{stage.stage}.run_id"] == stage.run_id

    run = client.get_run(publish_run)
    assert run.data.tags["publish.model_version"] == "1"
    assert run.data.tags["publish.hub_revision"] == result.hub.revision
    assert (
        mlflow.artifacts.load_dict(f"{run.info.artifact_uri}/{LINEAGE_ARTIFACT}")["parent_run_id"]
        == lineage.parent_run_id
    )

    # What the registry hands out is the folder itself, weights equal to the source checkpoint.
    # (``models:/`` URIs resolve through the process-wide registry URI in MLflow 3.17, whatever is passed.)
    uri = client.get_model_version_download_uri(NAME, champion.version)
    downloaded = Path(
        mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "dl"), tracking_uri=tracking_uri)
    )
    assert tree_digest(downloaded) == result.hub.revision
    assert weights_digest(read_state_dict(downloaded)) == weights_digest(read_state_dict(checkpoint))


def test_identical_republish_rewrites_nothing_and_moves_the_aliases(
    checkpoint, lineage, config, tracking_uri, publish_run, tmp_path
):
    first = release(checkpoint, lineage, config, publish_run, tmp_path)
    repo = Path(first.hub.location)
    stamp = {p: p.stat().st_mtime_ns for p in repo.iterdir()}
    second = release(checkpoint, lineage, config, publish_run, tmp_path)
    assert not second.hub.committed and second.hub.revision == first.hub.revision
    assert {p: p.stat().st_mtime_ns for p in repo.iterdir()} == stamp

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    assert [int(v.version) for v in client.search_model_versions(f"name='{NAME}'")] == [2, 1]
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == second.model_version.version == "2"
    assert str(client.get_model_version_by_alias(NAME, CANDIDATE).version) == "2"


def test_changed_release_replaces_the_dry_run_repository(checkpoint, lineage, config, publish_run, tmp_path):
    import dataclasses

    first = release(checkpoint, lineage, config, publish_run, tmp_path)
    resharded = dataclasses.replace(config, max_shard_bytes=config.max_shard_bytes * 2)
    second = release(checkpoint, lineage, resharded, publish_run, tmp_path)
    repo = Path(second.hub.location)
    assert second.hub.committed and second.hub.revision != first.hub.revision
    # Shards of the first release that the second lacks are gone, not left beside the new ones.
    assert sorted(p.name for p in repo.glob("*.safetensors")) == list(second.folder.weight_files)
    assert [p.name for p in repo.parent.iterdir()] == ["ling26-tiny"]
