"""What every stage task shares: the config it receives as canonical JSON, its nested MLflow run, DVC
versioning of its outputs, and the Flyte cache policy. Kept free of heavy imports (torch, mlflow) at
module level so that importing the workflow stays cheap."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from configs import PipelineConfig, cache_version, config_hash, from_dict, to_dict, to_json

log = logging.getLogger("ling26")


def code_fingerprint(stage: str) -> str:
    """Digest of the source files a stage runs (``lineage.code_deps.stage_code_files``: the import closure
    of its task modules), plus ``configs`` (the schema) and this module."""
    import hashlib

    from lineage.code_deps import stage_code_files
    from lineage.paths import REPO_ROOT

    files = {*stage_code_files(stage), *(REPO_ROOT / "configs").rglob("*.py"), Path(__file__).resolve()}
    digest = hashlib.sha256()
    for file in sorted(files):
        digest.update(file.relative_to(REPO_ROOT).as_posix().encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def stage_cache(stage: str) -> Any:
    """Flyte cache for a stage task: keyed on the config JSON and data inputs (Flyte's own key), with a
    version from the config schema and the stage's code, so an edit to the code re-runs the stage. The
    MLflow parent run id is ignored, otherwise every execution (a new parent run) would miss the cache."""
    from flytekit import Cache

    return Cache(version=f"{cache_version()}-code-{code_fingerprint(stage)}", ignored_inputs=("parent_run_id",))


def load_config(config_json: str) -> PipelineConfig:
    """Parse and re-validate the config a task received (unknown keys / wrong types fail by name)."""
    try:
        data = json.loads(config_json)
    except json.JSONDecodeError as err:
        raise ValueError(f"config_json is not valid JSON: {err}") from err
    return from_dict(PipelineConfig, data)


def dump_config(cfg: PipelineConfig) -> str:
    return to_json(cfg)


class _WorkerRun:
    """Stand-in run for non-zero ranks of a multi-process task: rank 0 alone writes lineage."""

    run_id = ""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: None


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def show_progress_logs() -> None:
    """Stage progress lines on stderr (Flyte's local runner configures no handler for our loggers)."""
    for name in ("tasks", "training", "lineage"):
        logger = logging.getLogger(name)
        if not logger.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False


@contextlib.contextmanager
def stage(name: str, cfg: PipelineConfig, parent_run_id: str | None) -> Iterator[Any]:
    """The nested MLflow run of stage ``name`` with config params and manifest already logged."""
    from lineage.runs import stage_run

    show_progress_logs()

    if not is_main_process():
        yield _WorkerRun()
        return

    with stage_run(
        name,
        parent_run_id=parent_run_id or None,
        experiment=cfg.lineage.experiment,
        configured_uri=cfg.lineage.tracking_uri,
        config=to_dict(cfg),
        config_hash=config_hash(cfg),
        seed=cfg.seed,
    ) as run:
        yield run


def version_outputs(name: str, cfg: PipelineConfig, run: Any) -> dict[str, str]:
    """DVC-commit and push the stage's outputs, and tag the MLflow run with their hashes."""
    if not cfg.lineage.dvc or not is_main_process():
        log.info("%s: DVC versioning off (lineage.dvc=false)", name)
        return {}
    from lineage import dvc

    if not dvc.is_dvc_repo():
        log.warning("%s: not inside a DVC repository; outputs are not versioned", name)
        return {}
    hashes = dvc.commit_stage(name)
    run.set_tags({f"dvc.{path}": md5 for path, md5 in hashes.items()})
    run.log_dict(hashes, "dvc_outputs.json")
    return hashes


def output_dir(name: str) -> Path:
    from lineage.paths import stage_dir

    path = stage_dir(name)
    path.mkdir(parents=True, exist_ok=True)
    return path


def record_sandbox_isolation(run: Any, cfg: PipelineConfig) -> str:
    """Tag ``run`` with the code sandbox's isolation in force (``environments.sandbox``), for stages whose
    verdicts come from running model-written code; raises ``SandboxUnavailable`` before any work when the
    required isolation cannot run here."""
    from environments.sandbox import sandbox_isolation

    isolation = sandbox_isolation(allow_weak_isolation=cfg.environments.sandbox_allow_weak_isolation)
    run.set_tags({"sandbox_isolation": isolation})
    return isolation
