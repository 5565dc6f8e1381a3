"""Properties every family must have: deterministic distinct tasks, verified reference candidates of
distinct lengths, and tool results that the engine loop (stop on </call>, observe, append) reproduces."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs.data import ENVIRONMENT_FAMILIES, EnvironmentsConfig
from environments import TOOL_CALL_STOP, Environment, Task, all_environments, get_environment

CFG = EnvironmentsConfig()
ENVS = all_environments(CFG)
# The code family runs its tests in a subprocess, so it gets fewer examples to keep the suite fast.
EXAMPLES = {"math": 30, "code": 10, "search": 20, "tool_use": 25, "workflow": 20}

seeds = st.integers(min_value=0, max_value=2**31 - 1)
difficulties = st.integers(min_value=1, max_value=5)


@pytest.mark.parametrize("family", ENVIRONMENT_FAMILIES)
def test_generation_is_deterministic_distinct_and_well_formed(family: str) -> None:
    env = ENVS[family]

    @settings(max_examples=EXAMPLES[family] * 2, deadline=None, database=None)
    @given(seed=seeds, difficulty=difficulties)
    def check(seed: int, difficulty: int) -> None:
        tasks = env.generate(4, seed=seed, difficulty=difficulty)
        assert tasks == env.generate(4, seed=seed, difficulty=difficulty)
        assert [t.task_id for t in tasks] == [f"{family}-{seed}-{i}" for i in range(4)]
        assert len({t.prompt for t in tasks}) == 4
        for task in tasks:
            assert task.family == family and task.difficulty == difficulty
            assert task.prompt.startswith(f"[{env.tag}] ") and task.prompt.endswith("\n")
            assert task.prompt.count("\n") == 1 and task.answer and task.answer == task.answer.strip()
            assert isinstance(json.loads(task.payload), dict)
        other = env.generate(4, seed=seed + 1, difficulty=difficulty)
        assert [t.prompt for t in other] != [t.prompt for t in tasks]

    check()


@pytest.mark.parametrize("family", ENVIRONMENT_FAMILIES)
def test_reference_candidates_are_verified_and_of_distinct_lengths(family: str) -> None:
    env = ENVS[family]

    @settings(max_examples=EXAMPLES[family], deadline=None, database=None)
    @given(seed=seeds, difficulty=difficulties, n=st.integers(min_value=1, max_value=8))
    def check(seed: int, difficulty: int, n: int) -> None:
        (task,) = env.generate(1, seed=seed, difficulty=difficulty)
        candidates = env.reference_responses(task, seed=seed, n=n)
        assert candidates == env.reference_responses(task, seed=seed, n=n)
        assert len(candidates) == n
        assert len({len(c.text) for c in candidates}) == n
        assert candidates[0].correct and candidates[0].style == "cot"
        if n >= 3:
            assert any(c.style == "wrong" for c in candidates)
        for c in candidates:
            verdict = env.verify(task, c.text)
            assert verdict.correct == c.correct == (c.style != "wrong"), (c, verdict)
            if c.correct:
                assert verdict.format_ok and verdict.reason == "correct"
                assert "<think>" not in c.text and c.text.rstrip().splitlines()[-1].startswith("Answer: ")

    check()


@pytest.mark.parametrize("family", ["search", "tool_use", "workflow"])
def test_engine_loop_reproduces_every_tool_result(family: str) -> None:
    """Cutting a reference response after each </call> and asking observe() must give back exactly
    the result block that follows, so SFT targets match what generation will see."""
    env = ENVS[family]

    @settings(max_examples=EXAMPLES[family], deadline=None, database=None)
    @given(seed=seeds, difficulty=difficulties)
    def check(seed: int, difficulty: int) -> None:
        (task,) = env.generate(1, seed=seed, difficulty=difficulty)
        for candidate in env.reference_responses(task, seed=seed, n=4):
            text = candidate.text
            end = text.find(TOOL_CALL_STOP)
            while end != -1:
                end += len(TOOL_CALL_STOP)
                observed = env.observe(task, text[:end])
                assert observed is not None and text[end:].startswith(observed)
                end = text.find(TOOL_CALL_STOP, end)
            assert env.observe(task, text) is None

    check()


@pytest.mark.parametrize("family", ["math", "code"])
def test_non_agentic_families_never_observe(family: str) -> None:
    env = ENVS[family]
    (task,) = env.generate(1, seed=0, difficulty=1)
    assert env.tool_names == ()
    assert env.observe(task, '<call>{"tool": "calculator", "args": {"expr": "1+1"}}</call>') is None


def test_required_tools_are_the_plan_tools_and_the_family_tools() -> None:
    for family in ("search", "tool_use", "workflow"):
        env = ENVS[family]
        assert set(env.tools) == set(env.tool_names)
        for difficulty in range(1, 6):
            for task in env.generate(10, seed=3, difficulty=difficulty):
                payload = json.loads(task.payload)
                assert payload["tools"] and set(payload["tools"]) <= set(env.tool_names)
                assert {step["tool"] for step in payload["plan"]} == set(payload["tools"])
                assert payload["plan"][-1]["value"] == task.answer


def test_registry() -> None:
    assert list(ENVS) == list(ENVIRONMENT_FAMILIES)
    for name, env in ENVS.items():
        assert isinstance(env, Environment) and env.family == name
        assert type(get_environment(name, CFG)) is type(env)
    assert list(all_environments(EnvironmentsConfig(families=("code", "math")))) == ["code", "math"]
    with pytest.raises(ValueError, match="unknown environment family"):
        get_environment("chess", CFG)


@pytest.mark.parametrize("family", ENVIRONMENT_FAMILIES)
def test_bad_requests_fail_loudly(family: str) -> None:
    env = ENVS[family]
    with pytest.raises(ValueError, match="difficulty"):
        env.generate(1, seed=0, difficulty=6)
    (task,) = env.generate(1, seed=0, difficulty=1)
    with pytest.raises(ValueError):
        env.reference_responses(task, seed=0, n=0)
    assert env.generate(0, seed=0, difficulty=1) == []


def test_exhausted_task_space_is_an_error_not_a_duplicate() -> None:
    # Difficulty-1 math has 255 distinct one-operation prompts over the digits 0-9.
    assert len(ENVS["math"].generate(255, seed=1, difficulty=1)) == 255
    with pytest.raises(ValueError, match="only 255 distinct tasks"):
        ENVS["math"].generate(256, seed=1, difficulty=1)


def _shortest_correct(env: Environment, task: Task) -> int:
    candidates = env.reference_responses(task, seed=0, n=4)
    return min(len(c.text) for c in candidates if c.correct)


@pytest.mark.parametrize(
    ("family", "difficulty", "limit"), [("math", 1, 60), ("math", 3, 200), ("code", 1, 80), ("code", 3, 200)]
)
def test_small_tasks_stay_short(family: str, difficulty: int, limit: int) -> None:
    """The tiny model trains on short sequences: prompt + shortest correct response stays within budget
    (code needs a little more at difficulty 1: ``def f(xs): return [x for x in xs if x>4]``)."""
    env = ENVS[family]
    for task in env.generate(8, seed=11, difficulty=difficulty):
        assert len(task.prompt) + _shortest_correct(env, task) <= limit, task.prompt


def test_search_corpus_is_pretraining_text() -> None:
    docs = ENVS["search"].pretrain_documents()
    assert docs == get_environment("search", CFG).pretrain_documents()
    text = "\n".join(docs)
    for task in ENVS["search"].generate(20, seed=5, difficulty=1):
        assert task.answer in text
    for family in ("math", "code", "tool_use", "workflow"):
        assert ENVS[family].pretrain_documents() == []
