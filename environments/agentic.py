"""What the tool-using families share: a task is solved by a plan of tool calls.

The plan (stored in the payload) lists each call, the value it establishes and a one-line note a
step-by-step response writes after the result (``price of zorb = 12``), like a step line in math.
Reference responses are rendered by running the real tools, so their results are exactly what
``observe`` appends during generation and what ``verify`` replays.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from environments.answers import ANSWER_PREFIX, format_number, parse_number
from environments.base import Draft, Environment, Task
from environments.tools import ToolCall, render_call, render_result, run_call


@dataclass(frozen=True)
class PlanStep:
    tool: str
    args: dict[str, Any]
    value: str  # what this step establishes, read from the tool's result
    note: str  # the step line written after the result


def plan_draft(question: str, steps: list[PlanStep]) -> Draft:
    """A task whose answer is the last step's value and which requires every tool the plan uses."""
    tools = sorted({step.tool for step in steps})
    return Draft(
        question=question, answer=steps[-1].value, payload={"tools": tools, "plan": [asdict(step) for step in steps]}
    )


def numeric_slips(answer: str) -> list[str]:
    """Nearby wrong numbers: off by one, off by ten, a decimal point moved."""
    value = parse_number(answer)
    if value is None:
        return []
    slips = (value + 1, value - 1, value + 10, value * 10, value / 10)
    return [format_number(s) for s in slips if s != value]


class ToolEnvironment(Environment):
    """A family whose tasks carry a plan of tool calls in the payload (see module docstring)."""

    def _slips(self, task: Task, rng: random.Random) -> list[str]:
        """Plausible wrong final answers; numeric by default."""
        return numeric_slips(task.answer)

    def _step(self, tool: str, args: dict[str, Any], note: str) -> PlanStep:
        """A plan step whose value is the tool's own output for ``args``; ``note`` may use ``{value}``."""
        value = run_call(ToolCall(tool, args), self.tools)
        if value.startswith("error:"):
            raise RuntimeError(f"{self.family}: reference call {tool} {args} failed: {value}")
        return PlanStep(tool, args, value, note.format(value=value))

    def _transcript(self, steps: list[PlanStep], *, notes: bool) -> str:
        text = ""
        for step in steps:
            text += render_call(step.tool, step.args) + render_result(
                run_call(ToolCall(step.tool, step.args), self.tools)
            )
            if notes:
                text += step.note + "\n"
        return text

    def _responses(self, task: Task, style: str, rng: random.Random) -> Iterator[str]:
        steps = [PlanStep(**step) for step in json.loads(task.payload)["plan"]]
        answer = f"{ANSWER_PREFIX} {task.answer}"
        cot = self._transcript(steps, notes=True)
        if style == "short":
            yield self._transcript(steps, notes=False) + answer
        elif style == "cot":
            yield cot + answer
        elif style == "verbose":
            recheck = f"Let me double-check: {steps[-1].note}\n"
            variants = [
                cot + recheck + answer,
                cot + self._transcript(steps[-1:], notes=False) + recheck + answer,
                cot + self._transcript(steps, notes=True) + recheck + answer,
            ]
            rng.shuffle(variants)
            yield from variants
            # Ever more repeated rounds after those, so a candidate set of any size has distinct lengths.
            for rounds in itertools.count(2):
                yield cot + self._transcript(steps, notes=True) * rounds + recheck + answer
        else:
            yield from self._wrong(steps, self._slips(task, rng), rng)

    def _wrong(self, steps: list[PlanStep], slips: list[str], rng: random.Random) -> Iterator[str]:
        """Guessing without tools, misreading the last result, or stopping one step early."""
        short = self._transcript(steps, notes=False)
        cot = self._transcript(steps, notes=True)
        variants = [prefix + f"{ANSWER_PREFIX} {slip}" for slip in slips for prefix in ("", short, cot)]
        if len(steps) > 1:
            variants.append(self._transcript(steps[:-1], notes=True) + f"{ANSWER_PREFIX} {steps[-2].value}")
        rng.shuffle(variants)
        yield from variants
