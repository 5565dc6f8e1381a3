"""Reference responses of every environment family (cot, short, wrong, verbose), shared by the text-side tests."""

import pytest

from configs.data import EnvironmentsConfig
from environments import all_environments


@pytest.fixture(scope="session")
def env_groups():
    """(environment, task, candidates) for two tasks per family and difficulty, eight candidates each."""
    groups = []
    for env in all_environments(EnvironmentsConfig()).values():
        for difficulty in (1, 3, 5):
            for task in env.generate(2, seed=7, difficulty=difficulty, allow_fewer=True):
                groups.append((env, task, env.reference_responses(task, seed=0, n=8)))
    return groups
