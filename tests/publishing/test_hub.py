"""Publishing to a Hub through the real huggingface_hub client, against the fake Hub on 127.0.0.1: a round trip
to from_pretrained, no commit for identical content, all-or-nothing commits under failures and concurrent
writers, and a token that reaches the Hub and nothing else."""

import dataclasses
import logging

import mlflow
import pytest
from fake_hub import FakeHub
from huggingface_hub import snapshot_download
from huggingface_hub.errors import HfHubHTTPError

from model.export import read_state_dict
from publishing import CANDIDATE, CHAMPION, HubConfigError, publish_release, weights_digest
from publishing.hub import relative_files

TOKEN = "hf_TESTtokenNEVERwritten0123456789"
NAME = "ling26-tiny"
REPO = "ling26-org/ling26-tiny"


@pytest.fixture
def hub():
    with FakeHub(token=TOKEN) as server:
        yield server


@pytest.fixture
def hub_config(config, hub):
    return dataclasses.replace(config, mode="hub", endpoint=hub.endpoint)


@pytest.fixture
def token(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", TOKEN)


def release(checkpoint, lineage, config, run_id, tmp_path):
    return publish_release(
        checkpoint=checkpoint,
        lineage=lineage,
        config=config,
        run_id=run_id,
        registered_model=NAME,
        work_dir=tmp_path / "work",
    )


def registry(tracking_uri):
    return mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def head_files(hub):
    return set(hub.repos[REPO].head.files)


@pytest.mark.usefixtures("token")
def test_round_trip_to_from_pretrained(checkpoint, lineage, hub_config, publish_run, hub, tracking_uri, tmp_path):
    from transformers import AutoModelForCausalLM

    result = release(checkpoint, lineage, hub_config, publish_run, tmp_path)

    repo = hub.repos[REPO]
    assert repo.private and len(repo.commits) == 2, "one commit on top of the repository's initial one"
    assert result.hub.committed and result.hub.revision == repo.head.oid and result.hub.location.endswith(REPO)
    assert hub.commit_headers[-1]["parentCommit"] == repo.commits[0].oid
    assert head_files(hub) == {".gitattributes", *relative_files(result.folder.path)}
    assert {p for p, blob in repo.head.files.items() if blob.lfs_oid} == set(result.folder.weight_files)
    assert len(result.folder.weight_files) > 1
    assert registry(tracking_uri).get_model_version_by_alias(NAME, CHAMPION).tags["hub.revision"] == repo.head.oid

    snapshot = snapshot_download(REPO, endpoint=hub.endpoint, token=TOKEN, cache_dir=tmp_path / "download")
    model = AutoModelForCausalLM.from_pretrained(snapshot, trust_remote_code=True)
    source = read_state_dict(checkpoint)
    state = model.state_dict()
    assert weights_digest({name: state[name] for name in source}) == weights_digest(source)


@pytest.mark.usefixtures("token")
def test_identical_republish_makes_no_commit(checkpoint, lineage, hub_config, publish_run, hub, tmp_path):
    first = release(checkpoint, lineage, hub_config, publish_run, tmp_path)
    puts = len(hub.lfs_puts)
    second = release(checkpoint, lineage, hub_config, publish_run, tmp_path)
    assert len(hub.repos[REPO].commits) == 2 and len(hub.commit_headers) == 1
    assert not second.hub.committed and second.hub.revision == first.hub.revision
    assert len(hub.lfs_puts) == puts


@pytest.mark.usefixtures("token")
def test_changed_release_is_one_commit_without_stale_files(checkpoint, lineage, hub_config, publish_run, hub, tmp_path):
    release(checkpoint, lineage, hub_config, publish_run, tmp_path)
    resharded = dataclasses.replace(hub_config, max_shard_bytes=hub_config.max_shard_bytes * 2)
    second = release(checkpoint, lineage, resharded, publish_run, tmp_path)
    assert len(hub.repos[REPO].commits) == 3 and second.hub.committed
    assert head_files(hub) == {".gitattributes", *relative_files(second.folder.path)}


@pytest.mark.usefixtures("token")
def test_failed_lfs_upload_leaves_no_revision_and_a_retry_succeeds(
    checkpoint, lineage, hub_config, publish_run, hub, tracking_uri, tmp_path
):
    # 403 is not retried by the client (an expired pre-signed URL looks like this); the other shards do upload.
    hub.fail("lfs_put", status=403)
    with pytest.raises(RuntimeError, match="Error while uploading"):
        release(checkpoint, lineage, hub_config, publish_run, tmp_path)
    assert len(hub.repos[REPO].commits) == 1 and hub.commit_headers == []
    client = registry(tracking_uri)
    assert str(client.get_model_version_by_alias(NAME, CANDIDATE).version) == "1"
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_model_version_by_alias(NAME, CHAMPION)
    uploaded_before = set(hub.lfs_puts)

    result = release(checkpoint, lineage, hub_config, publish_run, tmp_path)
    assert len(hub.repos[REPO].commits) == 2 and result.hub.revision == hub.repos[REPO].head.oid
    # The retry uploads only what the failed attempt did not: every object exactly once overall.
    assert len(hub.lfs_puts) == len(set(hub.lfs_puts)) == len(result.folder.weight_files)
    assert uploaded_before < set(hub.lfs_puts)
    assert str(client.get_model_version_by_alias(NAME, CHAMPION).version) == result.model_version.version == "2"


@pytest.mark.usefixtures("token")
def test_failed_commit_leaves_no_revision_and_a_retry_succeeds(
    checkpoint, lineage, hub_config, publish_run, hub, tmp_path
):
    hub.fail("commit", status=500)
    with pytest.raises(HfHubHTTPError):
        release(checkpoint, lineage, hub_config, publish_run, tmp_path)
    assert len(hub.repos[REPO].commits) == 1
    puts = len(hub.lfs_puts)
    result = release(checkpoint, lineage, hub_config, publish_run, tmp_path)
    assert len(hub.repos[REPO].commits) == 2 and result.hub.committed
    assert len(hub.lfs_puts) == puts, "the objects uploaded by the failed attempt are reused"


@pytest.mark.usefixtures("token")
def test_transient_lfs_error_is_retried_by_the_client(checkpoint, lineage, hub_config, publish_run, hub, tmp_path):
    hub.fail("lfs_put", status=503)
    result = release(checkpoint, lineage, hub_config, publish_run, tmp_path)
    assert hub.faults_left("lfs_put") == 0
    assert result.hub.committed and len(hub.repos[REPO].commits) == 2


@pytest.mark.usefixtures("token")
def test_a_concurrent_commit_makes_the_release_fail_whole(checkpoint, lineage, hub_config, publish_run, hub, tmp_path):
    release(checkpoint, lineage, hub_config, publish_run, tmp_path)
    hub.before_commit = lambda: hub.push(REPO, {"NOTES.md": b"someone else"})
    resharded = dataclasses.replace(hub_config, max_shard_bytes=hub_config.max_shard_bytes * 2)
    with pytest.raises(HfHubHTTPError, match="412"):
        release(checkpoint, lineage, resharded, publish_run, tmp_path)
    head = hub.repos[REPO].head
    assert head.message == "someone else's commit" and len(hub.repos[REPO].commits) == 3
    assert "NOTES.md" in head.files and not any(p.startswith("model-00001-of-00002") for p in head.files)


def test_hub_mode_needs_a_token_and_fails_before_any_side_effect(
    checkpoint, lineage, hub_config, publish_run, hub, tracking_uri, tmp_path
):
    with pytest.raises(HubConfigError, match="HF_TOKEN"):
        release(checkpoint, lineage, hub_config, publish_run, tmp_path)
    assert hub.requests == [] and registry(tracking_uri).search_registered_models() == []
    assert not (tmp_path / "work").exists()


@pytest.mark.usefixtures("token")
def test_the_token_reaches_the_hub_and_nothing_else(
    checkpoint, lineage, hub_config, publish_run, hub, tracking_uri, tmp_path, caplog
):
    caplog.set_level(logging.DEBUG)
    result = release(checkpoint, lineage, hub_config, publish_run, tmp_path)
    snapshot_download(REPO, endpoint=hub.endpoint, token=TOKEN, cache_dir=tmp_path / "download")
    assert hub.authorizations == {f"Bearer {TOKEN}"}

    needle = TOKEN.encode()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "README.md" for p in written) and any(p.suffix == ".db" for p in written)
    assert [p for p in written if needle in p.read_bytes()] == []
    assert TOKEN not in caplog.text

    client = registry(tracking_uri)
    run = client.get_run(publish_run)
    version = client.get_model_version(NAME, result.model_version.version)
    for values in (run.data.params, run.data.tags, version.tags):
        assert not any(TOKEN in f"{k}={v}" for k, v in values.items())
    for blob in hub.repos[REPO].head.files.values():
        assert needle not in (blob.content or hub.lfs[blob.lfs_oid])
