"""The ``workflow`` family: chains of tool calls where each result feeds the next call.

Two-call chains at difficulty 1-2, three-call chains from 3; the quantities in the question grow
with difficulty (2-5, 2-9, 2-9, 10-99, 100-999). Kinds:
- ``What do 3 zorbs cost?``: lookup price -> calculator
- ``What does the zorb weigh in g?``: lookup weight (kg) -> convert
- ``How many zorbs are left after selling 3?``: lookup stock -> calculator
- ``What do 3 zorbs weigh in g?``: lookup weight -> convert -> calculator
- ``What do 3 zorbs and 4 brels cost?``: lookup price -> lookup price -> calculator
- ``What is the zorb stock worth?``: lookup stock -> lookup price -> calculator
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from fractions import Fraction
from typing import ClassVar

from environments.agentic import PlanStep, ToolEnvironment, plan_draft
from environments.base import Draft
from environments.tables import TABLE, TOOLS, json_number
from environments.tools import ToolFn

# Quantities by difficulty; those of the two-call kinds (d <= 2) stay below the smallest stock (10),
# so "left" is never negative.
_QUANTITIES = {1: (2, 5), 2: (2, 9), 3: (2, 9), 4: (10, 99), 5: (100, 999)}


class WorkflowEnvironment(ToolEnvironment):
    family: ClassVar[str] = "workflow"
    tag: ClassVar[str] = "flow"
    tool_names: ClassVar[tuple[str, ...]] = ("calculator", "convert", "lookup")

    @property
    def tools(self) -> Mapping[str, ToolFn]:
        return TOOLS

    def _lookup(self, item: str, field: str) -> PlanStep:
        return self._step("lookup", {"item": item, "field": field}, f"{field} of {item} = {{value}}")

    def _calc(self, expr: str) -> PlanStep:
        return self._step("calculator", {"expr": expr}, f"{expr} = {{value}}")

    def _grams(self, kilograms: PlanStep) -> PlanStep:
        args = {"value": json_number(Fraction(kilograms.value)), "from": "kg", "to": "g"}
        return self._step("convert", args, f"{kilograms.value} kg = {{value}} g")

    def _draw(self, rng: random.Random, difficulty: int) -> Draft:
        item, other = rng.sample(sorted(TABLE), 2)
        q = rng.randint(*_QUANTITIES[difficulty])
        kind = rng.choice(("cost", "grams", "left") if difficulty <= 2 else ("grams_total", "two_cost", "worth"))
        if kind == "cost":
            price = self._lookup(item, "price")
            return plan_draft(f"What do {q} {item}s cost?", [price, self._calc(f"{price.value}*{q}")])
        if kind == "grams":
            weight = self._lookup(item, "weight")
            return plan_draft(f"What does the {item} weigh in g?", [weight, self._grams(weight)])
        if kind == "left":
            stock = self._lookup(item, "stock")
            left = self._calc(f"{stock.value}-{q}")
            return plan_draft(f"How many {item}s are left after selling {q}?", [stock, left])
        if kind == "grams_total":
            weight = self._lookup(item, "weight")
            grams = self._grams(weight)
            return plan_draft(f"What do {q} {item}s weigh in g?", [weight, grams, self._calc(f"{grams.value}*{q}")])
        if kind == "two_cost":
            q2 = rng.randint(*_QUANTITIES[difficulty])
            first, second = self._lookup(item, "price"), self._lookup(other, "price")
            expr = f"{first.value}*{q}+{second.value}*{q2}"
            return plan_draft(f"What do {q} {item}s and {q2} {other}s cost?", [first, second, self._calc(expr)])
        stock, price = self._lookup(item, "stock"), self._lookup(item, "price")
        worth = self._calc(f"{stock.value}*{price.value}")
        return plan_draft(f"What is the {item} stock worth?", [stock, price, worth])
