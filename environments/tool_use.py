"""The ``tool_use`` family: one JSON tool call answers the question.

Three kinds, drawn evenly: ``Compute 37*12+5`` (calculator), ``Convert 3 km to m`` (convert) and
``What is the price of the zorb?`` (lookup). Difficulty d sets the calculator's number of operations
(d) and operand size (up to 99, from d = 3 up to 999), and the conversion's shape: whole values to a
smaller unit (d <= 2), decimal values (d = 3), then to a larger unit with a whole (d = 4) or decimal
(d = 5) result.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from fractions import Fraction
from typing import Any, ClassVar

from environments.agentic import ToolEnvironment, plan_draft
from environments.answers import format_number
from environments.base import Draft
from environments.tables import FIELD_UNITS, FIELDS, TABLE, TOOLS, UNITS, json_number
from environments.tools import ToolFn

# At most this many multiplications per calculator task, so results stay within the calculator's range.
MAX_PRODUCTS = 2
# Conversions between units at most this far apart, so values stay readable.
MAX_RATIO = 1000
PAIRS = sorted(
    (big, small)
    for big, (dim_b, size_b) in UNITS.items()
    for small, (dim_s, size_s) in UNITS.items()
    if dim_b == dim_s and size_s < size_b and size_b // size_s <= MAX_RATIO
)


class ToolUseEnvironment(ToolEnvironment):
    family: ClassVar[str] = "tool_use"
    tag: ClassVar[str] = "tool"
    tool_names: ClassVar[tuple[str, ...]] = ("calculator", "convert", "lookup")

    @property
    def tools(self) -> Mapping[str, ToolFn]:
        return TOOLS

    def _draw(self, rng: random.Random, difficulty: int) -> Draft:
        kind = rng.choice(self.tool_names)
        if kind == "calculator":
            top = 99 if difficulty <= 2 else 999
            expr = str(rng.randint(2, top))
            for _ in range(difficulty):
                expr += rng.choice("+-*" if expr.count("*") < MAX_PRODUCTS else "+-") + str(rng.randint(2, top))
            return plan_draft(f"Compute {expr}", [self._step("calculator", {"expr": expr}, f"{expr} = {{value}}")])
        if kind == "convert":
            return self._draw_convert(rng, difficulty)
        item, field = rng.choice(sorted(TABLE)), rng.choice(FIELDS)
        unit = f" in {FIELD_UNITS[field]}" if field in FIELD_UNITS else ""
        step = self._step("lookup", {"item": item, "field": field}, f"{field} of {item} = {{value}}")
        return plan_draft(f"What is the {field} of the {item}{unit}?", [step])

    def _draw_convert(self, rng: random.Random, difficulty: int) -> Draft:
        big, small = rng.choice(PAIRS)
        ratio = UNITS[big][1] // UNITS[small][1]
        if difficulty <= 3:
            source, target = big, small
            value = Fraction(rng.randint(1, 9 if difficulty == 1 else 99), 10 if difficulty == 3 else 1)
        else:
            source, target = small, big
            value = Fraction(rng.randint(1, 99), 1 if difficulty == 4 else 10) * ratio
        args: dict[str, Any] = {"value": json_number(value), "from": source, "to": target}
        shown = format_number(value)
        step = self._step("convert", args, f"{shown} {source} = {{value}} {target}")
        return plan_draft(f"Convert {shown} {source} to {target}", [step])
