"""Where a release folder goes: a local folder laid out as the Hub repository would hold it (the default dry
run), or a Hugging Face Hub repository through the real ``huggingface_hub`` client.

A Hub publish is one commit of every file (``create_commit``): the Hub applies a commit whole or not at all, and
``parent_commit`` makes it fail rather than land on top of a head it has not seen. Files of earlier releases
that this one lacks are deleted in the same commit. Re-publishing identical content makes no commit: the client
asks the Hub for each file's current oid (git blob sha1, or the LFS sha256) and drops unchanged files, and with
nothing left it returns the current head.

The token is read from ``HF_TOKEN`` in the environment at the moment of upload and handed to the client only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from configs.publish import PublishConfig

HF_TOKEN_ENV = "HF_TOKEN"
# The Hub creates this with every repository (its LFS rules); a release never deletes it.
HUB_MANAGED_FILES = frozenset({".gitattributes"})


class HubConfigError(RuntimeError):
    """A Hub publish cannot start (no token); the message says what to set."""


@dataclass(frozen=True, kw_only=True)
class HubResult:
    mode: str
    repo_id: str
    # The repository's URL, or the local folder of a dry run.
    location: str
    # The commit sha on the Hub; for a dry run, the content digest of the folder.
    revision: str
    # False when the target already held exactly this content (nothing was written or committed).
    committed: bool


def token_from_env() -> str:
    token = os.environ.get(HF_TOKEN_ENV, "")
    if not token:
        raise HubConfigError(
            f"publish.mode=hub needs a Hub write token in the {HF_TOKEN_ENV} environment variable (it is read "
            "from there only, never from a config); or publish with publish.mode=dry_run"
        )
    return token


def publish_folder(folder: Path, config: PublishConfig, *, commit_message: str, dry_run_root: Path) -> HubResult:
    """Publish ``folder`` as ``config`` says: to ``config.endpoint`` or into ``dry_run_root / repo_id``."""
    if config.mode == "hub":
        return upload_to_hub(folder, config, commit_message=commit_message, token=token_from_env())
    return write_dry_run(folder, config, root=dry_run_root)


def upload_to_hub(folder: Path, config: PublishConfig, *, commit_message: str, token: str) -> HubResult:
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi

    api = HfApi(endpoint=config.endpoint, token=token, library_name="ling26-pipeline")
    repo = api.create_repo(config.repo_id, private=config.private, exist_ok=True, repo_type="model")
    head = api.repo_info(config.repo_id, revision=config.revision).sha
    local = relative_files(folder)
    stale = sorted(set(api.list_repo_files(config.repo_id, revision=head)) - set(local) - HUB_MANAGED_FILES)
    operations = [CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(folder / name)) for name in local]
    operations += [CommitOperationDelete(path_in_repo=name) for name in stale]
    info = api.create_commit(
        config.repo_id,
        operations,
        commit_message=commit_message,
        revision=config.revision,
        parent_commit=head,
    )
    return HubResult(
        mode="hub", repo_id=config.repo_id, location=str(repo), revision=info.oid, committed=info.oid != head
    )


def write_dry_run(folder: Path, config: PublishConfig, *, root: Path) -> HubResult:
    """Copy ``folder`` to ``root / repo_id`` unless that already holds exactly the same files."""
    target = root / config.repo_id
    digest = tree_digest(folder)
    result = HubResult(mode="dry_run", repo_id=config.repo_id, location=str(target), revision=digest, committed=False)
    if target.is_dir() and tree_digest(target) == digest:
        return result
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    shutil.copytree(folder, staging / "repo")
    # Copied beside the target, then swapped in by rename: a reader never sees a half-copied repository.
    retired = staging / "old"
    if target.exists():
        target.rename(retired)
    (staging / "repo").rename(target)
    shutil.rmtree(staging)
    return dataclasses.replace(result, committed=True)


def tree_digest(folder: Path) -> str:
    """sha256 over every file's relative path and content sha256: equal digests, equal repositories."""
    digest = hashlib.sha256()
    for name in relative_files(folder):
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256((folder / name).read_bytes()).digest())
    return digest.hexdigest()


def relative_files(folder: Path) -> list[str]:
    """Every file under ``folder``, as sorted POSIX paths relative to it (the paths of a Hub commit)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
