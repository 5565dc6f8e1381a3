"""Tool calls in text: ``<call>{"tool": ..., "args": {...}}</call>`` answered by ``<result>...</result>``.

Generation engines stop on TOOL_CALL_STOP, hand the transcript to ``Environment.observe`` and append
what it returns. Anything the model writes can reach this module, so nothing here raises on bad
input: a malformed call becomes an ``error: ...`` result the model can read and recover from.
``check_transcript`` replays every call of a finished response against the real tools, so a result
the model wrote itself instead of calling is caught as a format violation.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from environments.answers import parse_number

CALL_OPEN = "<call>"
TOOL_CALL_STOP = "</call>"
RESULT_OPEN = "<result>"
RESULT_CLOSE = "</result>"

_MARKER = re.compile(r"</?(?:call|result)>")
_CYCLE = (CALL_OPEN, TOOL_CALL_STOP, RESULT_OPEN, RESULT_CLOSE)


class ToolError(ValueError):
    """A tool call the tool cannot serve; the message is shown to the model after ``error: ``."""


@dataclass(frozen=True)
class ToolCall:
    tool: str
    args: dict[str, Any]


ToolFn = Callable[[Mapping[str, Any]], str]


def render_call(tool: str, args: Mapping[str, Any]) -> str:
    """The canonical (compact JSON) spelling of a call, as reference responses write it."""
    body = json.dumps({"tool": tool, "args": dict(args)}, separators=(",", ":"))
    return f"{CALL_OPEN}{body}{TOOL_CALL_STOP}"


def render_result(text: str) -> str:
    """A result block; newlines and angle brackets are replaced so it can never open or close a block."""
    clean = " ".join(text.split()).replace("<", "(").replace(">", ")")
    return f"{RESULT_OPEN}{clean}{RESULT_CLOSE}\n"


def parse_call(raw: str) -> ToolCall:
    """Parse the JSON between ``<call>`` and ``</call>``; ToolError when it is not a well-formed call."""
    try:
        obj = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ToolError(f"malformed tool call: invalid JSON ({err.msg})") from None
    if not isinstance(obj, dict) or set(obj) != {"tool", "args"}:
        raise ToolError('malformed tool call: want {"tool": name, "args": {...}}')
    if not isinstance(obj["tool"], str) or not isinstance(obj["args"], dict):
        raise ToolError("malformed tool call: tool must be a string and args an object")
    return ToolCall(obj["tool"], obj["args"])


def run_call(call: ToolCall, tools: Mapping[str, ToolFn]) -> str:
    """The tool's output for ``call``, or ``error: ...`` when the tool is unknown or rejects the args."""
    fn = tools.get(call.tool)
    if fn is None:
        return f"error: unknown tool {call.tool[:40]!r} (tools: {', '.join(sorted(tools))})"
    try:
        return fn(call.args)
    except ToolError as err:
        return f"error: {err}"


def run_raw_call(raw: str, tools: Mapping[str, ToolFn]) -> str:
    try:
        call = parse_call(raw)
    except ToolError as err:
        return f"error: {err}"
    return run_call(call, tools)


def pending_call(transcript: str) -> str | None:
    """The raw text of the call that ``transcript`` ends with, or None when it ends otherwise."""
    stripped = transcript.rstrip()
    if not stripped.endswith(TOOL_CALL_STOP):
        return None
    start = stripped.rfind(CALL_OPEN)
    if start == -1:
        return None
    return stripped[start + len(CALL_OPEN) : -len(TOOL_CALL_STOP)]


def check_transcript(response: str, tools: Mapping[str, ToolFn]) -> tuple[list[ToolCall], str | None]:
    """Replay a response's calls: (the calls, None) when every call is well formed, known and followed
    by exactly the result the tool gives; otherwise the calls read so far and the first problem."""
    marks = list(_MARKER.finditer(response))
    for i, mark in enumerate(marks):
        if mark.group() != _CYCLE[i % 4]:
            return [], f"format: unexpected {mark.group()}"
    if len(marks) % 4:
        return [], f"format: {_CYCLE[len(marks) % 4 - 1]} without its {_CYCLE[len(marks) % 4]}"
    calls: list[ToolCall] = []
    for i in range(0, len(marks), 4):
        opened, closed, result_open, result_close = marks[i : i + 4]
        number = i // 4 + 1
        if response[closed.end() : result_open.start()].strip():
            return calls, f"format: text between call {number} and its result"
        try:
            call = parse_call(response[opened.end() : closed.start()])
        except ToolError as err:
            return calls, f"format: call {number}: {err}"
        if call.tool not in tools:
            return calls, f"format: call {number}: unknown tool {call.tool[:40]!r}"
        written = response[result_open.start() : result_close.end()] + "\n"
        if written != render_result(run_call(call, tools)):
            return calls, f"format: result of call {number} is not what the tool returned"
        calls.append(call)
    return calls, None


def check_keys(args: Mapping[str, Any], required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    """ToolError naming the first missing or unexpected argument."""
    missing = [k for k in required if k not in args]
    if missing:
        raise ToolError(f"missing argument {missing[0]!r}")
    unexpected = sorted(set(args) - set(required) - set(optional))
    if unexpected:
        raise ToolError(f"unexpected argument {unexpected[0][:40]!r}")


def str_arg(args: Mapping[str, Any], key: str) -> str:
    value = args[key]
    if not isinstance(value, str) or not value.strip():
        raise ToolError(f"argument {key!r} must be a non-empty string")
    return value.strip()


def number_arg(args: Mapping[str, Any], key: str) -> Fraction:
    """A JSON number (or a numeric string), exactly: 2.5 means 5/2, not the nearest float."""
    value = args[key]
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ToolError(f"argument {key!r} must be a number")
    parsed = parse_number(str(value))
    if parsed is None:
        raise ToolError(f"argument {key!r} must be a number")
    return parsed
