"""The ``math`` family: multi-step integer arithmetic whose written steps help a small model.

An expression is a left-to-right chain (``(7+5)*3-4``): each step combines the running value with one
new operand, so a step line (``12*3=36``) needs only the line before it and one number of the prompt.
That locality is what lets a tiny model gain from writing the steps, and what gives Evo-CoT and
shortest-correct distillation a real trade-off between short and step-by-step responses.

Difficulty d: d operations; operands of one digit (d <= 2), up to two (d <= 4) or three digits
(d = 5); multiplication only by 2..9 (0..9 at d = 1) and only while the running value is at most 999;
no negative intermediate values. The prompt is ordinary Python arithmetic (parentheses where the
chain needs them), so the calculator tool and ``eval`` agree with it.
"""

from __future__ import annotations

import itertools
import json
import operator
import random
from collections.abc import Iterator
from typing import ClassVar

from environments.answers import ANSWER_PREFIX
from environments.base import Draft, Environment, Task

_OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
# Slips a person makes in one step: off by one, a dropped or doubled carry.
_SLIPS = (1, -1, 2, -2, 10, -10)
# Multiplication only while the running value is small, so numbers stay short.
_MAX_MULTIPLICAND = 999

Step = tuple[int, str, int, int]  # left, op, right, value


def _step_line(step: Step) -> str:
    left, op, right, value = step
    return f"{left}{op}{right}={value}"


def _run_chain(start: int, moves: list[tuple[str, int]], slip_at: int = -1, slip: int = 0) -> list[Step]:
    """The steps of a chain; with ``slip``, the value of step ``slip_at`` is off and the error propagates."""
    steps: list[Step] = []
    value = start
    for i, (op, right) in enumerate(moves):
        left = value
        value = _OPS[op](left, right) + (slip if i == slip_at else 0)
        steps.append((left, op, right, value))
    return steps


def _answer(value: int) -> str:
    return f"{ANSWER_PREFIX} {value}"


class ArithmeticEnvironment(Environment):
    family: ClassVar[str] = "math"
    tag: ClassVar[str] = "math"

    def _draw(self, rng: random.Random, difficulty: int) -> Draft:
        top = 9 if difficulty <= 2 else 99 if difficulty <= 4 else 999
        start = rng.randint(0, top)
        expr, value, additive = str(start), start, False
        moves: list[tuple[str, int]] = []
        for _ in range(difficulty):
            op = rng.choice("+-*" if value <= _MAX_MULTIPLICAND else "+-")
            if op == "*":
                right = rng.randint(0 if difficulty == 1 else 2, 9)
                expr = f"({expr})*{right}" if additive else f"{expr}*{right}"
            else:
                right = rng.randint(0, top if op == "+" else min(top, value))
                expr = f"{expr}{op}{right}"
            additive = op != "*"
            value = _OPS[op](value, right)
            moves.append((op, right))
        return Draft(question=f"{expr}=?", answer=str(value), payload={"start": start, "moves": moves, "expr": expr})

    def _responses(self, task: Task, style: str, rng: random.Random) -> Iterator[str]:
        start, moves, expr = _payload(task)
        steps = _run_chain(start, moves)
        lines = [_step_line(s) for s in steps]
        answer = _answer(steps[-1][3])
        if style == "short":
            yield answer
        elif style == "cot":
            yield "\n".join([*lines, answer])
        elif style == "verbose":
            yield from _verbose(lines, expr, answer, rng)
        else:
            yield from _wrong(start, moves, rng)


def _payload(task: Task) -> tuple[int, list[tuple[str, int]], str]:
    data = json.loads(task.payload)
    return data["start"], [(op, right) for op, right in data["moves"]], data["expr"]


def _verbose(lines: list[str], expr: str, answer: str, rng: random.Random) -> Iterator[str]:
    """Steps, then re-checks of the last k steps (and of the whole expression) after the answer is known."""
    value = answer.removeprefix(ANSWER_PREFIX).strip()
    rechecks = [f"Let me double-check: {line}" for line in lines]
    variants = [rechecks[-k:] for k in range(1, len(rechecks) + 1)]
    variants += [[*r, f"Let me double-check: {expr}={value}"] for r in variants]
    rng.shuffle(variants)
    for extra in variants:
        yield "\n".join([*lines, *extra, answer])
    # Ever longer rounds of re-checks after those, so a candidate set of any size has distinct lengths.
    for rounds in itertools.count(2):
        yield "\n".join([*lines, *rechecks * rounds, answer])


def _wrong(start: int, moves: list[tuple[str, int]], rng: random.Random) -> Iterator[str]:
    """Plausible mistakes: one step off (written out or answer only), or the last operation forgotten.
    A slip that makes a value negative is not plausible (true chains never go below zero), so none does."""
    variants: list[str] = []
    for at in range(len(moves)):
        for slip in _SLIPS:
            steps = _run_chain(start, moves, at, slip)
            if any(value < 0 for *_, value in steps):
                continue
            lines = [_step_line(s) for s in steps]
            answer = _answer(steps[-1][3])
            variants += [
                answer,
                "\n".join([*lines, answer]),
                "\n".join([*lines, f"Let me double-check: {lines[at]}", answer]),
            ]
    dropped = _run_chain(start, moves[:-1])
    variants.append("\n".join([*(_step_line(s) for s in dropped), _answer(dropped[-1][3] if dropped else start)]))
    rng.shuffle(variants)
    yield from variants
