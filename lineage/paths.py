"""Where run state lives. One place decides, so every task, test and CLI agrees."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def state_dir() -> Path:
    """Embedded stores (MLflow sqlite + artifacts, DVC remote); ``LING26_STATE_DIR`` moves them."""
    path = Path(os.environ.get("LING26_STATE_DIR", REPO_ROOT / ".ling26"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir() -> Path:
    """Stage outputs, one folder per stage, tracked by DVC (``dvc.yaml``); ``LING26_DATA_DIR`` moves them."""
    return Path(os.environ.get("LING26_DATA_DIR", REPO_ROOT / "data"))


def stage_dir(stage: str) -> Path:
    return data_dir() / stage


def tracking_uri(configured: str | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the configured URI, else sqlite under the state folder."""
    return os.environ.get("MLFLOW_TRACKING_URI") or configured or f"sqlite:///{state_dir() / 'mlflow.db'}"


def artifact_root() -> str:
    return (state_dir() / "mlartifacts").as_uri()


def dvc_remote_dir() -> Path:
    return state_dir() / "dvc-remote"
