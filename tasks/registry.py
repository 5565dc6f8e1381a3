"""Every stage of the pipeline, in workflow order: the one list that the CLI (``python -m tasks``), the
DVC stages and the workflow are checked against (``tests/tasks/test_stage_registry.py``)."""

from __future__ import annotations

import importlib

from tasks.stage import Stage

STAGE_NAMES = ("curate", "pretrain", "migrate", "post_train", "kpop_rl", "distill", "evaluate", "publish")


def stage(name: str) -> Stage:
    """The declaration of stage ``name`` (``tasks.<name>.task.STAGE``)."""
    if name not in STAGE_NAMES:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGE_NAMES)}")
    return importlib.import_module(f"tasks.{name}.task").STAGE
