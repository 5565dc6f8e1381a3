"""Evaluation prompts rebuilt from curation's tables: a lossless round trip, the per-family selection spread
over difficulties, and the contract checked on read."""

import pandas as pd
import pandera.errors
import pytest

from configs.data import EnvironmentsConfig
from data_contracts import PromptRow
from environments import all_environments
from evals.tasks import eval_tasks, frame_from_tasks, select_eval_tasks, tasks_from_frame


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    """Four tasks per difficulty 1..3 of math and tool_use, difficulties 1..2 only of search."""
    envs = all_environments(EnvironmentsConfig())
    levels = {"math": (1, 2, 3), "tool_use": (1, 2, 3), "search": (1, 2)}
    tasks = [t for family, ds in levels.items() for d in ds for t in envs[family].generate(4, seed=d, difficulty=d)]
    return PromptRow.validate(frame_from_tasks(tasks))


def test_tasks_round_trip_through_a_frame(frame):
    tasks = tasks_from_frame(frame)
    pd.testing.assert_frame_equal(frame_from_tasks(tasks), frame)
    assert tasks_from_frame(frame_from_tasks(tasks)) == tasks


def test_selection_takes_the_first_tasks_of_every_difficulty(frame):
    picked = select_eval_tasks(frame, per_family=5)
    counts = pd.Series([(t.family, t.difficulty) for t in picked]).value_counts()
    # ceil(5 / 3 levels) = 2 of every (family, difficulty); search has two levels, so four tasks.
    assert (counts == 2).all() and len(counts) == 8
    first = frame.groupby(["family", "difficulty"], sort=True).head(2)
    assert [t.task_id for t in picked] == list(first["prompt_id"])
    with pytest.raises(ValueError, match="per_family must be >= 1"):
        select_eval_tasks(frame, per_family=0)


def test_eval_tasks_reads_and_checks_the_curated_table(frame, tmp_path):
    with pytest.raises(FileNotFoundError, match="run the curate stage first"):
        eval_tasks(tmp_path, 2)
    frame.to_parquet(tmp_path / "eval.parquet", index=False)
    assert [t.task_id for t in eval_tasks(tmp_path, 3)] == [t.task_id for t in select_eval_tasks(frame, 3)]
    frame.assign(difficulty=9).to_parquet(tmp_path / "eval.parquet", index=False)
    with pytest.raises(pandera.errors.SchemaError, match="difficulty"):
        eval_tasks(tmp_path, 3)
