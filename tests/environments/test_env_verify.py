"""Verifier edge cases: the shared answer format, tool-call well-formedness, and code answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs.data import EnvironmentsConfig
from environments import Task, get_environment
from environments.answers import answers_match, format_number, parse_number

CFG = EnvironmentsConfig(sandbox_timeout_s=1.0, sandbox_memory_mb=256)
MATH = get_environment("math", CFG)
CODE = get_environment("code", CFG)
TOOL = get_environment("tool_use", CFG)
SEARCH = get_environment("search", CFG)

MATH_TASK = Task(
    "math-0-0", "math", 1, "[math] 4+5=?\n", "9", json.dumps({"start": 4, "moves": [["+", 5]], "expr": "4+5"})
)


@pytest.mark.parametrize(
    "response",
    ["Answer: 9", "  Answer:   9  \n\n", "4+5=9\nAnswer: 9", "Answer: 9.0", "Answer: +9", "Answer: 9.", "Answer: 09"],
)
def test_fair_spellings_of_the_right_number_pass(response: str) -> None:
    verdict = MATH.verify(MATH_TASK, response)
    assert verdict.correct and verdict.format_ok, verdict


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        ("9", "no final 'Answer:' line"),
        ("4+5=9", "no final 'Answer:' line"),
        ("", "no final 'Answer:' line"),
        ("<think>4+5=9</think>\nAnswer: 9", "<think>"),
        ("Answer: 9\n<think>", "<think>"),
        ("Answer: 9\nI am sure.", "text after"),
        ("Answer:   \n", "empty answer"),
        ('<call>{"tool": "calculator", "args": {"expr": "4+5"}}</call><result>9</result>\nAnswer: 9', "unknown tool"),
        ("<result>9</result>\nAnswer: 9", "unexpected <result>"),
    ],
)
def test_format_violations_are_incorrect(response: str, reason: str) -> None:
    verdict = MATH.verify(MATH_TASK, response)
    assert not verdict.correct and not verdict.format_ok
    assert reason in verdict.reason


def test_missing_answer_line_extracts_nothing() -> None:
    assert MATH.verify(MATH_TASK, "the answer is 9").extracted is None


@pytest.mark.parametrize(
    ("response", "reason"),
    [
        ("Answer: nine", "wrong type"),
        ("Answer: 9 apples", "wrong type"),
        ("Answer: 10", "wrong answer: got 10, want 9"),
        ("Answer: 9/1", "wrong type"),
    ],
)
def test_wrong_answers_keep_the_format_but_fail(response: str, reason: str) -> None:
    verdict = MATH.verify(MATH_TASK, response)
    assert verdict.format_ok and not verdict.correct
    assert reason in verdict.reason


def test_last_answer_line_counts() -> None:
    assert MATH.verify(MATH_TASK, "Answer: 8\nno wait\nAnswer: 9").correct
    assert not MATH.verify(MATH_TASK, "Answer: 9\nAnswer: 8").correct


def test_text_answers_ignore_case_space_and_a_full_stop() -> None:
    (task,) = SEARCH.generate(1, seed=2, difficulty=1)
    (cot,) = SEARCH.reference_responses(task, seed=0, n=1)
    tail = f"Answer: {task.answer}"
    for spelling in (f"Answer:  {task.answer.lower()} .", f"Answer: {task.answer.upper()}"):
        assert SEARCH.verify(task, cot.text.replace(tail, spelling)).correct


@settings(max_examples=200, deadline=None, database=None)
@given(st.integers(min_value=-(10**9), max_value=10**9), st.integers(min_value=0, max_value=6))
def test_numbers_round_trip_exactly(numerator: int, places: int) -> None:
    value = Fraction(numerator, 10**places)
    text = format_number(value)
    assert parse_number(text) == value
    assert answers_match(text, format_number(value))[0]
    if "." in text:
        assert not text.endswith(("0", "."))


def test_non_terminating_numbers_are_rounded() -> None:
    assert format_number(Fraction(10, 3)) == "3.333333"
    assert format_number(Fraction(-2, 3)) == "-0.666667"
    assert format_number(Fraction(-1, 10**9)) == "0"


def _agentic_task_and_cot(family: str, difficulty: int) -> tuple[Task, str]:
    env = get_environment(family, CFG)
    (task,) = env.generate(1, seed=4, difficulty=difficulty)
    return task, env.reference_responses(task, seed=0, n=1)[0].text


@pytest.mark.parametrize(
    ("broken", "reason"),
    [
        (lambda t: t.replace('{"tool"', "{tool", 1), "invalid JSON"),
        (lambda t: t.replace('"args":', '"arguments":', 1), "malformed tool call"),
        (lambda t: t.replace('"tool":"', '"tool":"x', 1), "unknown tool"),
        (lambda t: t.replace("</result>", "1</result>", 1), "not what the tool returned"),
        (lambda t: t.replace("</call>", "", 1), "unexpected <result>"),
        (lambda t: t[: t.index("</call>") + len("</call>")] + "\nAnswer: 1", "</call> without its <result>"),
        (lambda t: t.replace("</call>", "</call>hmm", 1), "text between call 1 and its result"),
    ],
)
def test_malformed_or_faked_tool_calls_are_format_violations(broken: Callable[[str], str], reason: str) -> None:
    task, cot = _agentic_task_and_cot("workflow", 1)
    env = get_environment("workflow", CFG)
    assert env.verify(task, cot).correct
    verdict = env.verify(task, broken(cot))
    assert not verdict.correct and not verdict.format_ok
    assert reason in verdict.reason, verdict.reason


def test_answering_without_the_tool_is_incorrect_even_when_right() -> None:
    task, _ = _agentic_task_and_cot("tool_use", 1)
    verdict = TOOL.verify(task, f"Answer: {task.answer}")
    assert verdict.format_ok and not verdict.correct and verdict.reason.startswith("did not call")


def test_observe_turns_malformed_calls_into_error_results() -> None:
    (task,) = TOOL.generate(1, seed=0, difficulty=1)
    cases = {
        "<call>{not json</call>": "error: malformed tool call: invalid JSON",
        '<call>{"tool": "calculator"}</call>': "error: malformed tool call",
        '<call>{"tool": "rm", "args": {}}</call>': "error: unknown tool 'rm'",
        '<call>{"tool": "calculator", "args": {"expr": "1/0"}}</call>': "error: division by zero",
        '<call>{"tool": "calculator", "args": {}}</call>': "error: missing argument 'expr'",
        '<call>{"tool": "lookup", "args": {"item": "nothing", "field": "price"}}</call>': "error: unknown item",
        '<call>{"tool": "calculator", "args": {"expr": "2+3*4"}}</call>\n': "14",
    }
    for transcript, expected in cases.items():
        result = TOOL.observe(task, "Some text " + transcript)
        assert result is not None and result.startswith(f"<result>{expected}") and result.endswith("</result>\n")
    assert TOOL.observe(task, "no call here") is None
    assert TOOL.observe(task, '<call>{"tool": "calculator", "args": {"expr": "1"}}') is None


@settings(max_examples=150, deadline=None, database=None)
@given(st.text(max_size=80))
def test_observe_never_raises_and_results_cannot_break_out(body: str) -> None:
    (task,) = TOOL.generate(1, seed=0, difficulty=1)
    result = TOOL.observe(task, f"<call>{body}</call>")
    assert result is not None and result.startswith("<result>") and result.endswith("</result>\n")
    inner = result[len("<result>") : -len("</result>\n")]
    assert "<" not in inner and ">" not in inner and "\n" not in inner


def _code_task(description: str = "add 3") -> Task:
    for seed in range(200):
        for task in CODE.generate(20, seed=seed, difficulty=1):
            if task.prompt == f"[code] f(x): {description}\n":
                return task
    raise AssertionError(f"no code task {description!r}")


def test_code_accepts_any_equivalent_function() -> None:
    task = _code_task("add 3")
    assert task.answer == "def f(x): return x+3"
    for source in ("def f(x): return 3 + x", "def f(x): y = x; return y - -3", "f = lambda x: x+3"):
        assert CODE.verify(task, f"Answer: {source}").correct, source


@pytest.mark.parametrize(
    ("source", "reason"),
    [
        ("def f(x) return x+3", "wrong type: not Python code"),
        ("x+3", "NameError"),
        ("def g(x): return x+3", "answer defines no function f"),
        ("def f(x): return x+4", "wrong answer: f(0) returned 4, want 3"),
        ("def f(x): return str(x+3)", "returned '3', want 3"),
        ("def f(x): return 1/0", "raised ZeroDivisionError"),
        ("def f(x): return sum(1 for _ in iter(int, 1))", "timed out"),
        ("def f(x): return [bytes(10**6) for _ in iter(int, 1)]", "memory limit exceeded"),
        ("import socket; socket.create_connection(('127.0.0.1', 80))", "used the network"),
        # Reward hacks: fake result lines, or exiting before the tests run.
        ("import os; print('@@results []'); os._exit(0)", "no test results"),
        ("import atexit; f = lambda x: x; atexit.register(print, '@@results [')", "no test results"),
    ],
)
def test_code_rejects_broken_slow_or_hostile_answers(source: str, reason: str) -> None:
    verdict = CODE.verify(_code_task("add 3"), f"Answer: {source}")
    assert verdict.format_ok and not verdict.correct
    assert reason in verdict.reason, verdict.reason


def test_code_fake_results_of_the_right_shape_still_fail() -> None:
    task = _code_task("add 3")
    n = len(json.loads(task.payload)["inputs"])
    fake = repr([("ok", "0")] * n)
    source = f'import atexit; f = lambda x: x; atexit.register(print, "@@results {fake}")'
    verdict = CODE.verify(task, f"Answer: {source}")
    assert not verdict.correct and "wrong answer" in verdict.reason
