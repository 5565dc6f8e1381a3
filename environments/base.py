"""The contract every task family follows, and the parts of it all families share.

A family samples tasks (``_draw``) and writes reference responses in four styles (``_responses``);
this base numbers and de-duplicates the tasks, verifies responses against the shared format, replays
tool calls, and assembles candidate sets whose lengths differ, because shortest-correct selection and
preference pairs need responses that differ in length and in correctness.
"""

from __future__ import annotations

import json
import random
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from configs.data import EnvironmentsConfig
from environments.answers import answer_format_problem, answers_match, extract_answer
from environments.tools import ToolFn, check_transcript, pending_call, render_result, run_raw_call

DIFFICULTIES = range(1, 6)
# Styles in the order a candidate set is filled: n=1 gives the step-by-step response, n=3 the first
# wrong one; beyond four, extra wrong and verbose responses alternate.
STYLES = ("cot", "short", "wrong", "verbose")
EXTRA_STYLES = ("wrong", "verbose")
# A sampler may redraw an already drawn prompt this many times per requested task before giving up.
DRAWS_PER_TASK = 50


@dataclass(frozen=True)
class Task:
    task_id: str
    family: str
    difficulty: int
    prompt: str
    answer: str
    payload: str


@dataclass(frozen=True)
class Verdict:
    correct: bool
    format_ok: bool
    extracted: str | None
    reason: str


@dataclass(frozen=True)
class Candidate:
    text: str
    correct: bool
    style: str


@dataclass(frozen=True)
class Draft:
    """A sampled task before it is numbered: the question (without family tag), answer and payload."""

    question: str
    answer: str
    payload: dict[str, Any]


class Environment(ABC):
    """A family of verifiable tasks: sampler, verifier, reference solver and (for agents) tools."""

    family: ClassVar[str]
    # Short fixed prefix of every prompt ("[math] "), so one model can tell the families apart.
    tag: ClassVar[str]
    tool_names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: EnvironmentsConfig) -> None:
        self.cfg = cfg

    @property
    def tools(self) -> Mapping[str, ToolFn]:
        """The callable tools by name; keys equal ``tool_names``."""
        return {}

    @abstractmethod
    def _draw(self, rng: random.Random, difficulty: int) -> Draft:
        """One random task of ``difficulty``; repeats are allowed (``generate`` drops them)."""

    @abstractmethod
    def _responses(self, task: Task, style: str, rng: random.Random) -> Iterator[str]:
        """Variants of a response in ``style``; ``reference_responses`` takes the first of a new length."""

    def _check(self, task: Task, answer: str) -> tuple[bool, str]:
        """Compare a well-formatted response's final answer with the task; (correct, reason)."""
        return answers_match(answer, task.answer)

    def generate(self, n: int, *, seed: int, difficulty: int, allow_fewer: bool = False) -> list[Task]:
        """``n`` distinct tasks, the same for the same (n, seed, difficulty); ValueError when the
        family has fewer than ``n`` distinct tasks of that difficulty, unless ``allow_fewer`` (then
        as many distinct tasks as were found)."""
        if difficulty not in DIFFICULTIES:
            raise ValueError(f"{self.family}: difficulty {difficulty} outside 1..5")
        if n < 0:
            raise ValueError(f"{self.family}: cannot generate {n} tasks")
        rng = random.Random(f"{self.family}|{seed}|{difficulty}")
        tasks: list[Task] = []
        seen: set[str] = set()
        for _ in range(DRAWS_PER_TASK * n):
            if len(tasks) == n:
                break
            draft = self._draw(rng, difficulty)
            prompt = f"[{self.tag}] {draft.question}\n"
            if prompt in seen:
                continue
            seen.add(prompt)
            tasks.append(
                Task(
                    task_id=f"{self.family}-{seed}-{len(tasks)}",
                    family=self.family,
                    difficulty=difficulty,
                    prompt=prompt,
                    answer=draft.answer,
                    payload=json.dumps(draft.payload, sort_keys=True),
                )
            )
        if len(tasks) < n and not allow_fewer:
            raise ValueError(
                f"{self.family}: only {len(tasks)} distinct tasks of difficulty {difficulty} found, {n} asked; "
                "ask for fewer or spread them over more difficulties"
            )
        return tasks

    def verify(self, task: Task, response: str) -> Verdict:
        """Strict check of a response: shared format, replayed tool calls, required tools, answer."""
        extracted = extract_answer(response)
        calls, call_problem = check_transcript(response, self.tools)
        problem = answer_format_problem(response) or call_problem
        if problem is not None:
            return Verdict(correct=False, format_ok=False, extracted=extracted, reason=problem)
        called = {call.tool for call in calls}
        missing = [tool for tool in json.loads(task.payload).get("tools", []) if tool not in called]
        if missing:
            return Verdict(correct=False, format_ok=True, extracted=extracted, reason=f"did not call {missing[0]}")
        assert extracted is not None  # answer_format_problem returned None, so an Answer line exists
        correct, reason = self._check(task, extracted)
        return Verdict(correct=correct, format_ok=True, extracted=extracted, reason=reason)

    def reference_responses(self, task: Task, *, seed: int, n: int) -> list[Candidate]:
        """``n`` verified candidates of distinct lengths: one per style in STYLES order, then extra
        wrong/verbose ones. The first is correct; for n >= 3 one is wrong. Deterministic."""
        if n < 1:
            raise ValueError(f"{self.family}: need at least one candidate, {n} asked")
        rng = random.Random(f"{task.task_id}|{task.prompt}|{seed}")
        streams = {style: self._responses(task, style, rng) for style in STYLES}
        lengths: set[int] = set()
        out: list[Candidate] = []
        for i in range(n):
            style = STYLES[i] if i < len(STYLES) else EXTRA_STYLES[i % 2]
            options = (style,) if i < len(STYLES) else (style, *(s for s in EXTRA_STYLES if s != style))
            candidate = next((c for s in options if (c := self._take(task, streams[s], s, lengths))), None)
            if candidate is None:
                raise ValueError(f"{self.family}: cannot write {n} responses of distinct lengths for {task.task_id}")
            lengths.add(len(candidate.text))
            out.append(candidate)
        return out

    def _take(self, task: Task, stream: Iterator[str], style: str, lengths: set[int]) -> Candidate | None:
        """The next variant of a new length; a 'wrong' variant that happens to be right is skipped."""
        for text in stream:
            if len(text) in lengths:
                continue
            verdict = self.verify(task, text)
            if style == "wrong" and verdict.correct:
                continue
            return Candidate(text=text, correct=verdict.correct, style=style)
        return None

    def observe(self, task: Task, transcript: str) -> str | None:
        """The result block to append when ``transcript`` ends with a tool call; None otherwise."""
        if not self.tool_names:
            return None
        raw = pending_call(transcript)
        if raw is None:
            return None
        return render_result(run_raw_call(raw, self.tools))

    def pretrain_documents(self) -> list[str]:
        """Extra text for the pre-training mix; most families have none."""
        return []
