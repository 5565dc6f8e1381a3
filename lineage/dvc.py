"""DVC versioning of stage outputs.

``dvc.yaml`` declares each stage (command ``python -m tasks.<stage>``, code and params as deps, its
``data/<stage>`` folder as the output). A Flyte task that has just produced those outputs records them
with ``dvc commit`` — the same lock entry ``dvc repro`` would write — and pushes them to the default
remote, so ``dvc status`` is clean after a run and the remote holds every output.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from lineage.paths import REPO_ROOT


class DvcError(RuntimeError):
    """A DVC command failed; the message carries DVC's own output."""


def _dvc(*args: str, repo: Path) -> str:
    proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=repo, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise DvcError(
            f"`dvc {' '.join(args)}` failed in {repo} (exit {proc.returncode}):\n{proc.stderr or proc.stdout}"
        )
    return proc.stdout


def is_dvc_repo(repo: Path = REPO_ROOT) -> bool:
    return (repo / ".dvc").is_dir() and (repo / "dvc.yaml").is_file()


def commit_stage(stage: str, *, repo: Path = REPO_ROOT, push: bool = True) -> dict[str, str]:
    """Record ``stage``'s current outputs in ``dvc.lock``, push them, and return ``{out path: md5}``."""
    if not is_dvc_repo(repo):
        raise DvcError(f"{repo} is not a DVC repository with a dvc.yaml; run `dvc init` there or set lineage.dvc=false")
    _dvc("commit", "--force", "--quiet", stage, repo=repo)
    if push:
        _dvc("push", "--quiet", stage, repo=repo)
    return output_hashes(stage, repo=repo)


def output_hashes(stage: str, *, repo: Path = REPO_ROOT) -> dict[str, str]:
    lock_path = repo / "dvc.lock"
    lock = yaml.safe_load(lock_path.read_text()) if lock_path.exists() else {}
    entry = (lock or {}).get("stages", {}).get(stage)
    if entry is None:
        raise DvcError(f"dvc.lock has no entry for stage {stage!r}")
    return {out["path"]: out["md5"] for out in entry.get("outs", [])}


def status(*, repo: Path = REPO_ROOT, cloud: bool = False) -> str:
    """``dvc status`` text; the empty string or DVC's up-to-date message means clean."""
    return _dvc("status", *(["--cloud"] if cloud else []), repo=repo)
