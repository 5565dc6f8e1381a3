"""Evaluation prompts as environment tasks: rebuilt from curation's prompt tables, and the held-out subset
every stage evaluates on (spread over each family's difficulties)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from environments import Task

TASK_COLUMNS = ("prompt_id", "family", "difficulty", "prompt", "answer", "payload")


def tasks_from_frame(frame: pd.DataFrame) -> list[Task]:
    """Environment tasks rebuilt from one of curation's prompt tables (eval, rl_prompts, sft_prompts)."""
    return [
        Task(
            task_id=r.prompt_id,
            family=r.family,
            difficulty=int(r.difficulty),
            prompt=r.prompt,
            answer=r.answer,
            payload=r.payload,
        )
        for r in frame.itertuples()
    ]


def frame_from_tasks(tasks: Sequence[Task]) -> pd.DataFrame:
    """The inverse of ``tasks_from_frame``: a ``PromptRow`` table."""
    return pd.DataFrame(
        [(t.task_id, t.family, t.difficulty, t.prompt, t.answer, t.payload) for t in tasks], columns=list(TASK_COLUMNS)
    )


def select_eval_tasks(frame: pd.DataFrame, per_family: int) -> list[Task]:
    """About ``per_family`` tasks of each family: the first ``ceil(per_family / levels)`` of every (family,
    difficulty), where ``levels`` is the largest number of difficulties any family has. A family with fewer
    levels gets fewer tasks rather than more of one difficulty, so every family is weighted the same way."""
    if per_family < 1:
        raise ValueError(f"per_family must be >= 1, got {per_family}")
    levels = frame.groupby("family")["difficulty"].nunique().max()
    return tasks_from_frame(frame.groupby(["family", "difficulty"], sort=True).head(-(-per_family // levels)))


def eval_tasks(curated: Path, per_family: int) -> list[Task]:
    """``select_eval_tasks`` of curation's ``eval.parquet``, checked against its ``PromptRow`` contract."""
    from data_contracts import PromptRow

    path = Path(curated) / "eval.parquet"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: run the curate stage first (make run, or python -m tasks.curate)"
        )
    return select_eval_tasks(PromptRow.validate(pd.read_parquet(path)), per_family)
