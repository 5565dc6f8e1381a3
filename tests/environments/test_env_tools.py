"""The tools (calculator, convert, lookup, search) and family-specific invariants of the task text."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from configs.data import EnvironmentsConfig
from environments import get_environment
from environments.calculator import calculate, calculator_tool
from environments.facts import ATTRIBUTES, FactCorpus
from environments.tables import TABLE, convert_tool, lookup_tool
from environments.tools import ToolError

CFG = EnvironmentsConfig()


@pytest.mark.parametrize(
    ("expr", "value"),
    [
        ("2+3*4", "14"),
        ("(2+3)*4", "20"),
        ("2**3**2", "512"),
        ("-3+5", "2"),
        ("7/2", "3.5"),
        ("10/3", "3.333333"),
        ("7//2", "3"),
        ("-7//2", "-4"),
        ("7%3", "1"),
        ("1.5*4", "6"),
        ("0.1+0.2", "0.3"),
        ("2**-2", "0.25"),
        (" 8 - 2 - 1 ", "5"),
    ],
)
def test_calculator_follows_python_precedence_exactly(expr: str, value: str) -> None:
    assert calculator_tool({"expr": expr}) == value


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("__import__('os')", "unsupported"),
        ("os.system('ls')", "unsupported"),
        ("x+1", "unsupported"),
        ("[1][0]", "unsupported"),
        ("'a'*3", "unsupported"),
        ("True+1", "unsupported"),
        ("1 if 1 else 2", "unsupported"),
        ("(lambda: 1)()", "unsupported"),
        ("1/0", "division by zero"),
        ("5%0", "division by zero"),
        ("0**-1", "division by zero"),
        ("9**9**9", "exponent"),
        ("2**0.5", "exponent"),
        ("10**15*10", "too large"),
        ("1+", "cannot parse"),
        ("1" * 201, "longer than"),
    ],
)
def test_calculator_refuses_everything_else(expr: str, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        calculate(expr)


def _expressions() -> st.SearchStrategy[str]:
    """Parenthesised integer expressions small enough (<= 99**3 a side) to stay in the calculator's range."""
    leaves = st.integers(min_value=0, max_value=99).map(str)
    return st.recursive(
        leaves,
        lambda inner: st.tuples(inner, st.sampled_from("+-*"), inner).map(lambda t: f"({t[0]}{t[1]}{t[2]})"),
        max_leaves=3,
    )


@settings(max_examples=200, deadline=None, database=None)
@given(_expressions(), _expressions(), st.sampled_from("+-*"))
def test_calculator_agrees_with_python_on_integer_arithmetic(left: str, right: str, op: str) -> None:
    expr = f"{left}{op}{right}"
    # eval is the test oracle only: the strategy emits nothing but digits, + - * and parentheses.
    assert calculate(expr) == eval(expr)


@pytest.mark.parametrize(
    ("args", "value"),
    [
        ({"value": 3, "from": "km", "to": "m"}, "3000"),
        ({"value": 1500, "from": "g", "to": "kg"}, "1.5"),
        ({"value": 2.5, "from": "h", "to": "min"}, "150"),
        ({"value": "90", "from": "s", "to": "min"}, "1.5"),
        ({"value": 1, "from": "min", "to": "h"}, "0.016667"),
    ],
)
def test_convert(args: dict, value: str) -> None:
    assert convert_tool(args) == value


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"value": 3, "from": "km", "to": "kg"}, "cannot convert length to mass"),
        ({"value": 3, "from": "km", "to": "parsec"}, "unknown unit"),
        ({"value": True, "from": "m", "to": "cm"}, "number"),
        ({"value": "lots", "from": "m", "to": "cm"}, "number"),
        ({"value": 1, "from": "m"}, "missing argument 'to'"),
        ({"value": 1, "from": "m", "to": "cm", "x": 1}, "unexpected argument 'x'"),
    ],
)
def test_convert_rejects_bad_arguments(args: dict, message: str) -> None:
    with pytest.raises(ToolError, match=message):
        convert_tool(args)


def test_lookup_reads_the_table() -> None:
    name, item = next(iter(TABLE.items()))
    assert lookup_tool({"item": name.upper(), "field": "price"}) == str(item.price)
    with pytest.raises(ToolError, match="unknown field"):
        lookup_tool({"item": name, "field": "colour"})
    with pytest.raises(ToolError, match="unknown item"):
        lookup_tool({"item": "unobtainium", "field": "price"})


def test_every_fact_is_found_first_by_its_forward_and_backward_query() -> None:
    corpus = FactCorpus()
    assert corpus.facts == FactCorpus().facts
    assert len({f.value for f in corpus.facts if f.attribute in ATTRIBUTES} | set(corpus.lands)) == len(
        corpus.lands
    ) * (1 + len(ATTRIBUTES))
    for fact in corpus.facts:
        assert corpus.search(f"{fact.attribute} of {fact.subject}") == [fact]
        if fact.attribute in ATTRIBUTES:
            assert corpus.search(f"{fact.attribute} is {fact.value}") == [fact]


def test_search_tool_arguments() -> None:
    corpus = FactCorpus()
    fact = corpus.facts[0]
    two = corpus.search_tool({"query": f"{fact.attribute} of {fact.subject}", "k": 2})
    assert two.startswith(fact.text) and two.count(".") == 2
    assert corpus.search_tool({"query": "zzz qqq"}) == "no results"
    for bad in ({"query": "x", "k": 0}, {"query": "x", "k": True}, {"query": ""}, {"q": "x"}):
        with pytest.raises(ToolError):
            corpus.search_tool(bad)


@settings(max_examples=40, deadline=None, database=None)
@given(seed=st.integers(min_value=0, max_value=10**6), difficulty=st.integers(min_value=1, max_value=5))
def test_math_steps_are_local(seed: int, difficulty: int) -> None:
    """Each step line combines the previous line's result with the prompt's next operand, and the
    prompt has exactly ``difficulty`` operations."""
    env = get_environment("math", CFG)
    (task,) = env.generate(1, seed=seed, difficulty=difficulty)
    numbers = [int(n) for n in re.findall(r"\d+", task.prompt)]
    assert len(numbers) == difficulty + 1
    cot = env.reference_responses(task, seed=seed, n=1)[0].text.splitlines()
    steps = [re.fullmatch(r"(-?\d+)([+\-*])(\d+)=(-?\d+)", line) for line in cot[:-1]]
    assert all(steps) and len(steps) == difficulty
    previous = numbers[0]
    for match, operand in zip(steps, numbers[1:], strict=True):
        left, _, right, _ = match.groups()
        assert int(left) == previous and int(right) == operand
        previous = int(match.group(4))
    assert str(previous) == task.answer == cot[-1].removeprefix("Answer: ")
    # eval is the test oracle only: the prompt holds digits, + - * and parentheses.
    assert eval(task.prompt.removeprefix("[math] ").removesuffix("=?\n")) == int(task.answer)


def test_workflow_steps_feed_each_other() -> None:
    env = get_environment("workflow", CFG)
    for difficulty in range(1, 6):
        for task in env.generate(10, seed=9, difficulty=difficulty):
            plan = json.loads(task.payload)["plan"]
            assert len(plan) == (2 if difficulty <= 2 else 3)
            last_args = json.dumps(plan[-1]["args"])
            assert any(step["value"] in last_args for step in plan[:-1]), plan
