"""The ``code`` family: write a one-line Python function from a short description.

Prompt ``[code] f(x): add 3, times 2`` -> answer ``Answer: def f(x): return (x+3)*2``. The answer
convention is the shared one: the code is the rest of the final ``Answer:`` line, so it must be a
one-line ``def f(...): ...`` (``;`` may join simple statements). It is judged by hidden unit tests
run in the sandbox, never by comparing text, so any function that behaves the same is correct.

The sandbox only reports f's values (their ``repr``) on the test inputs; the expected values never
enter the child process, so code that prints a fake "passed" line or exits early cannot pass, and the
sandbox's PID namespace hides the trainer, so they cannot be read out of its memory either.
"""

from __future__ import annotations

import ast
import functools
import itertools
import json
import random
from collections.abc import Iterator
from typing import Any, ClassVar

from environments.answers import ANSWER_PREFIX
from environments.base import Draft, Environment, Task
from environments.code_ops import (
    DOMAINS,
    Domain,
    Step,
    apply_chain,
    describe,
    draw_chain,
    function_source,
    mutations,
    render_steps,
)
from environments.sandbox import run_in_sandbox

RANDOM_TESTS = 3
MAX_CODE_CHARS = 2000
_RESULT_MARKER = "@@results "
# The harness imports nothing (each import costs the child milliseconds); the trusted inputs are
# embedded as a Python literal and the values come back as the repr of a list of (kind, text) pairs.
_HARNESS = """
_ns = {{"__name__": "answer"}}
exec(compile({source!r}, "<answer>", "exec"), _ns)
_f = _ns.get("f")
if not callable(_f):
    raise SystemExit("answer defines no function f")
_out = []
for _arg in {inputs}:
    try:
        _out.append(("ok", repr(_f(_arg))))
    except MemoryError:
        raise
    except Exception as _err:
        _out.append(("raised", type(_err).__name__))
print({marker!r} + repr(_out))
"""
Results = tuple[tuple[str, str], ...]
_SANDBOX_PROBLEMS = {
    "timeout": "timed out",
    "memory": "memory limit exceeded",
    "blocked": "used the network or processes",
}


def _parse_results(stdout: str, count: int) -> Results | None:
    """The last results line, if it is exactly ``count`` (kind, text) string pairs. The child's output
    is untrusted too: it is parsed as a literal only, and anything else means no result."""
    lines = [line for line in stdout.splitlines() if line.startswith(_RESULT_MARKER)]
    if not lines:
        return None
    try:
        results = ast.literal_eval(lines[-1][len(_RESULT_MARKER) :])
    except (ValueError, SyntaxError, RecursionError):
        return None
    if not isinstance(results, list) or len(results) != count:
        return None
    if not all(isinstance(r, tuple) and len(r) == 2 and all(isinstance(x, str) for x in r) for r in results):
        return None
    return tuple(results)


@functools.lru_cache(maxsize=4096)
def _run_tests(
    source: str, inputs: str, timeout_s: float, memory_mb: int, allow_weak_isolation: bool
) -> tuple[str | None, Results]:
    """Run ``source`` on ``inputs`` (a list literal) in the sandbox: (problem, one (kind, text) per input).
    Cached because the short, step-by-step and verbose reference responses of a task share one function."""
    program = _HARNESS.format(source=source, inputs=inputs, marker=_RESULT_MARKER)
    result = run_in_sandbox(
        program, timeout_s=timeout_s, memory_mb=memory_mb, allow_weak_isolation=allow_weak_isolation
    )
    if result.status != "ok":
        last_line = (result.stderr.strip().splitlines() or ["error"])[-1]
        return _SANDBOX_PROBLEMS.get(result.status, last_line[:200]), ()
    results = _parse_results(result.stdout, len(ast.literal_eval(inputs)))
    if results is None:
        return "no test results (did the code exit early?)", ()
    return None, results


def _answer(source: str) -> str:
    return f"{ANSWER_PREFIX} {source}"


class CodeEnvironment(Environment):
    family: ClassVar[str] = "code"
    tag: ClassVar[str] = "code"

    def _draw(self, rng: random.Random, difficulty: int) -> Draft:
        domain = DOMAINS[rng.choice(sorted(DOMAINS))]
        steps = draw_chain(rng, domain, difficulty)
        inputs = [*domain.edge_inputs, *(domain.random_input(rng) for _ in range(RANDOM_TESTS))]
        expected = [repr(apply_chain(domain, steps, value)) for value in inputs]
        return Draft(
            question=f"f({domain.arg}): {describe(domain, steps)}",
            answer=function_source(domain, steps),
            payload={"domain": domain.name, "steps": steps, "inputs": inputs, "expected": expected},
        )

    def _check(self, task: Task, answer: str) -> tuple[bool, str]:
        if len(answer) > MAX_CODE_CHARS:
            return False, f"answer longer than {MAX_CODE_CHARS} characters"
        try:
            compile(answer, "<answer>", "exec")
        except (SyntaxError, ValueError, RecursionError) as err:
            return False, f"wrong type: not Python code ({getattr(err, 'msg', err)})"
        payload = json.loads(task.payload)
        problem, results = _run_tests(
            answer,
            repr(payload["inputs"]),
            self.cfg.sandbox_timeout_s,
            self.cfg.sandbox_memory_mb,
            self.cfg.sandbox_allow_weak_isolation,
        )
        if problem is not None:
            return False, f"tests not run: {problem}"
        for value, want, (kind, got) in zip(payload["inputs"], payload["expected"], results, strict=True):
            if kind != "ok":
                return False, f"wrong answer: f({value!r}) raised {got}"
            if got != want:
                return False, f"wrong answer: f({value!r}) returned {got[:80]}, want {want}"
        return True, "correct"

    def _responses(self, task: Task, style: str, rng: random.Random) -> Iterator[str]:
        payload = json.loads(task.payload)
        domain = DOMAINS[payload["domain"]]
        steps: list[Step] = [(name, k) for name, k in payload["steps"]]
        lines = render_steps(domain, steps)
        answer = _answer(task.answer)
        if style == "short":
            yield answer
        elif style == "cot":
            yield "\n".join([*lines, answer])
        elif style == "verbose":
            yield from _verbose(task, domain, steps, lines, rng)
        else:
            yield from _wrong(domain, steps, payload, rng)


def _verbose(task: Task, domain: Domain, steps: list[Step], lines: list[str], rng: random.Random) -> Iterator[str]:
    """Steps, then k re-checks on fresh inputs (never the hidden ones, which would leak the tests into
    training text): k = 1..3 shuffled, then 4, 5, ... so a candidate set of any size has distinct lengths."""
    hidden = json.loads(task.payload)["inputs"]
    answer = _answer(task.answer)

    def recheck() -> str:
        value = domain.random_input(rng)
        while value in hidden:
            value = domain.random_input(rng)
        return f"Let me double-check: f({value!r})={apply_chain(domain, steps, value)!r}"

    checks = [recheck() for _ in range(3)]
    for k in itertools.chain(rng.sample(range(1, 4), 3), itertools.count(4)):
        while len(checks) < k:
            checks.append(recheck())
        yield "\n".join([*lines, *checks[:k], answer])


def _wrong(domain: Domain, steps: list[Step], payload: dict[str, Any], rng: random.Random) -> Iterator[str]:
    """Mutated chains that differ from the task on the hidden inputs, answer-only or step by step."""
    variants: list[str] = []
    for chain in mutations(domain, steps):
        if [repr(apply_chain(domain, chain, v)) for v in payload["inputs"]] == payload["expected"]:
            continue
        answer = _answer(function_source(domain, chain))
        variants += [answer, "\n".join([*render_steps(domain, chain), answer])]
    rng.shuffle(variants)
    yield from variants
