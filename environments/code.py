"""The ``code`` family: write a one-line Python function from a short description.

Prompt ``[code] f(x): add 3, times 2`` -> answer ``Answer: def f(x): return (x+3)*2``. The answer
convention is the shared one: the code is the rest of the final ``Answer:`` line, so it must be a
one-line ``def f(...): ...`` (``;`` may join simple statements). It is judged by hidden unit tests
run in the sandbox, never by comparing text, so any function that behaves the same is correct.

The sandbox only reports f's values (their ``repr``) on the test inputs; the expected values never
enter the child process, so code that prints a fake "passed" line or exits early cannot pass.
"""

from __future__ import annotations

import functools
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
_HARNESS = """
import json
_ns = {{"__name__": "answer"}}
exec(compile({source!r}, "<answer>", "exec"), _ns)
_f = _ns.get("f")
if not callable(_f):
    raise SystemExit("answer defines no function f")
_out = []
for _arg in json.loads({inputs!r}):
    try:
        _out.append(["ok", repr(_f(_arg))])
    except MemoryError:
        raise
    except Exception as _err:
        _out.append(["raised", type(_err).__name__])
print({marker!r} + json.dumps(_out))
"""
Results = tuple[tuple[str, str], ...]
_SANDBOX_PROBLEMS = {
    "timeout": "timed out",
    "memory": "memory limit exceeded",
    "blocked": "used the network or processes",
}


@functools.lru_cache(maxsize=4096)
def _run_tests(source: str, inputs_json: str, timeout_s: float, memory_mb: int) -> tuple[str | None, Results]:
    """Run ``source`` on the inputs in the sandbox: (problem, one (kind, text) per input). Cached because
    the short, step-by-step and verbose reference responses of a task share one function."""
    program = _HARNESS.format(source=source, inputs=inputs_json, marker=_RESULT_MARKER)
    result = run_in_sandbox(program, timeout_s=timeout_s, memory_mb=memory_mb)
    if result.status != "ok":
        last_line = (result.stderr.strip().splitlines() or ["error"])[-1]
        return _SANDBOX_PROBLEMS.get(result.status, last_line[:200]), ()
    lines = [line for line in result.stdout.splitlines() if line.startswith(_RESULT_MARKER)]
    try:
        results = json.loads(lines[-1][len(_RESULT_MARKER) :]) if lines else None
    except json.JSONDecodeError:
        results = None
    # The child's output is untrusted too: anything but one [kind, text] pair per input is no result.
    if (
        not isinstance(results, list)
        or len(results) != len(json.loads(inputs_json))
        or not all(isinstance(r, list) and len(r) == 2 and all(isinstance(x, str) for x in r) for r in results)
    ):
        return "no test results (did the code exit early?)", ()
    return None, tuple((kind, text) for kind, text in results)


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
            answer, json.dumps(payload["inputs"]), self.cfg.sandbox_timeout_s, self.cfg.sandbox_memory_mb
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
            checks = [domain.random_input(rng) for _ in range(3)]
            for k in rng.sample(range(1, 4), 3):
                rechecks = [f"Let me double-check: f({v!r})={apply_chain(domain, steps, v)!r}" for v in checks[:k]]
                yield "\n".join([*lines, *rechecks, answer])
        else:
            yield from _wrong(domain, steps, payload, rng)


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
