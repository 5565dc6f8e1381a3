"""The ``convert`` and ``lookup`` tools and the tables behind them, shared by tool_use and workflow.

Conversion factors are whole numbers of a base unit per dimension, so every conversion is exact; the
lookup table lists invented items (from a fixed seed) whose price, weight and stock only the tool knows.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from environments.answers import format_number
from environments.calculator import calculator_tool
from environments.names import invented_names
from environments.tools import ToolError, ToolFn, check_keys, number_arg, str_arg

# unit -> (dimension, size in the dimension's base unit)
UNITS: dict[str, tuple[str, int]] = {
    "mm": ("length", 1),
    "cm": ("length", 10),
    "m": ("length", 1000),
    "km": ("length", 1_000_000),
    "g": ("mass", 1),
    "kg": ("mass", 1000),
    "t": ("mass", 1_000_000),
    "s": ("time", 1),
    "min": ("time", 60),
    "h": ("time", 3600),
    "ml": ("volume", 1),
    "l": ("volume", 1000),
}
FIELDS = ("price", "weight", "stock")
# Unit of each looked-up field, for prompts; price and stock are plain counts.
FIELD_UNITS = {"weight": "kg"}
TABLE_SEED = 2606
TABLE_ITEMS = 64


@dataclass(frozen=True)
class Item:
    name: str
    price: int
    weight: Fraction  # kg, one decimal
    stock: int

    def field(self, name: str) -> Fraction:
        return Fraction(getattr(self, name))


def _build_table() -> dict[str, Item]:
    rng = random.Random(TABLE_SEED)
    names = invented_names(rng, TABLE_ITEMS, avoid=UNITS)
    return {
        name: Item(name, price=rng.randint(2, 99), weight=Fraction(rng.randint(1, 99), 10), stock=rng.randint(10, 500))
        for name in names
    }


TABLE: dict[str, Item] = _build_table()


def convert(value: Fraction, source: str, target: str) -> Fraction:
    for unit in (source, target):
        if unit not in UNITS:
            raise ToolError(f"unknown unit {unit[:20]!r} (units: {', '.join(UNITS)})")
    (dim_from, size_from), (dim_to, size_to) = UNITS[source], UNITS[target]
    if dim_from != dim_to:
        raise ToolError(f"cannot convert {dim_from} to {dim_to}")
    return value * size_from / size_to


def json_number(value: Fraction) -> int | float:
    """The JSON spelling of a short decimal: whole numbers as ints, others as (exactly printed) floats."""
    return int(value) if value.denominator == 1 else float(format_number(value))


def convert_tool(args: Mapping[str, Any]) -> str:
    """``{"value": 3, "from": "km", "to": "m"}`` -> ``"3000"``."""
    check_keys(args, ("value", "from", "to"))
    return format_number(convert(number_arg(args, "value"), str_arg(args, "from"), str_arg(args, "to")))


def lookup_tool(args: Mapping[str, Any]) -> str:
    """``{"item": "zorb", "field": "price"}`` -> ``"12"``."""
    check_keys(args, ("item", "field"))
    item, field = str_arg(args, "item").lower(), str_arg(args, "field").lower()
    if item not in TABLE:
        raise ToolError(f"unknown item {item[:40]!r}")
    if field not in FIELDS:
        raise ToolError(f"unknown field {field[:40]!r} (fields: {', '.join(FIELDS)})")
    return format_number(TABLE[item].field(field))


TOOLS: dict[str, ToolFn] = {"calculator": calculator_tool, "convert": convert_tool, "lookup": lookup_tool}
