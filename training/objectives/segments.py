"""Reasoning segments of a response and a deterministic detector of redundant ones.

The Ling-2.6 report has an LLM judge flag logically circular or redundant reasoning segments (METHODS
§6.1) and prune "over-reflective" re-checks after the answer is found (§6.2). A toy pipeline has no
judge it can trust, so this module stands in with a rule that is exact on the environments' grammar
and conservative elsewhere:

* segments are the non-empty lines before the final ``Answer:`` line; a line holding tool calls is the
  calls themselves, canonical JSON (the environment's result text is not the model's reasoning);
* a segment is compared after case folding, dropping all whitespace, a leading re-check phrase
  ("Let me double-check:", "Let me verify", ...) and a trailing full stop;
* a segment is **redundant** when it repeats an earlier segment (a restated step, a repeated tool
  call), or when it is a re-check phrase line that comes after the answer was first derived;
* the answer is *derived* by the first line whose value equals the final answer: an ``Answer:`` line,
  the right-hand side of ``lhs = value``, a tool result, or a line the answer ends with (code:
  ``def f(xs): return <line>``).

Re-checks *before* the answer is derived are kept: there a check can still change the outcome.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from environments.answers import ANSWER_PREFIX, answers_match, extract_answer

_RECHECK = re.compile(
    r"^\s*(?:let me\s+|let's\s+|to\s+)?(?:double[- ]?check|re-?check|check|verify|confirm)(?:ing)?\b[\s:,.-]*",
    re.IGNORECASE,
)
_CALL = re.compile(r"<call>(.*?)</call>", re.DOTALL)
_RESULT = re.compile(r"<result>(.*?)</result>", re.DOTALL)
# "=" of an equation, not of "==", "<=", ">=" or "!=" (code lines contain those).
_EQUALS = re.compile(r"(?<![=<>!])=(?!=)")


@dataclass(frozen=True)
class Segment:
    line_index: int  # index into text.splitlines()
    key: str  # normalised content used to detect repeats
    recheck: bool
    derives_answer: bool


def _canonical_call(raw: str) -> str:
    try:
        return json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":"))
    except json.JSONDecodeError:
        return raw


def _normalise(text: str) -> str:
    return "".join(text.split()).casefold().removesuffix(".")


def _derives(line: str, answer: str | None) -> bool:
    if answer is None:
        return False
    stripped = line.strip()
    values = [m.strip() for m in _RESULT.findall(stripped)]
    if stripped.startswith(ANSWER_PREFIX):
        values.append(stripped[len(ANSWER_PREFIX) :])
    elif not values and _EQUALS.search(stripped):
        values.append(_EQUALS.split(stripped)[-1])
    if any(answers_match(v.strip(), answer)[0] for v in values if v.strip()):
        return True
    body = _normalise(stripped)
    return not values and bool(body) and _normalise(answer).endswith(body)


def segments(text: str) -> list[Segment]:
    """The reasoning segments of ``text`` (everything before its final ``Answer:`` line), in order."""
    lines = text.splitlines()
    answer_line = next(
        (i for i in range(len(lines) - 1, -1, -1) if lines[i].strip().startswith(ANSWER_PREFIX)), len(lines)
    )
    answer = extract_answer(text)
    out: list[Segment] = []
    for i, line in enumerate(lines[:answer_line]):
        if not line.strip():
            continue
        calls = _CALL.findall(line)
        match = _RECHECK.match(line)
        if calls:
            key = "call:" + "|".join(_canonical_call(c) for c in calls)
        else:
            key = _normalise(line[match.end() :] if match else line)
        out.append(Segment(i, key, match is not None and not calls, _derives(line, answer)))
    return out


def redundant_flags(found: list[Segment]) -> list[bool]:
    """Per segment: does it repeat an earlier one, or re-check after the answer was derived?"""
    seen: set[str] = set()
    derived = False
    flags = []
    for segment in found:
        flags.append(segment.key in seen or (segment.recheck and derived))
        seen.add(segment.key)
        derived = derived or (segment.derives_answer and not segment.recheck)
    return flags


def redundancy_fraction(text: str) -> float:
    """Redundant segments / all segments; 0 for a response with no reasoning segments."""
    found = segments(text)
    return sum(redundant_flags(found)) / len(found) if found else 0.0


def prune_after_answer(text: str) -> str:
    """``text`` without its redundant segments that come after the answer was first derived.

    Lines before the derivation, new (non-redundant) lines after it and the final ``Answer:`` line stay.
    """
    found = segments(text)
    flags = redundant_flags(found)
    first = next((k for k, s in enumerate(found) if s.derives_answer and not s.recheck), None)
    if first is None:
        return text
    drop = {s.line_index for k, (s, flag) in enumerate(zip(found, flags, strict=True)) if flag and k > first}
    return "".join(line for i, line in enumerate(text.splitlines(keepends=True)) if i not in drop)
