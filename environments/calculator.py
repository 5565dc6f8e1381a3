"""The ``calculator`` tool: exact arithmetic on an expression the model wrote, without ``eval``.

The expression is parsed with ``ast`` and only numbers, parentheses, unary +/- and the binary
operators + - * / // % ** are evaluated, over exact fractions. Sizes are bounded (expression length,
exponent, magnitude) so a hostile expression such as ``9**9**9`` is refused instead of hanging.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

from environments.answers import format_number
from environments.tools import ToolError, check_keys, str_arg

MAX_EXPR_CHARS = 200
MAX_EXPONENT = 16
MAX_MAGNITUDE = 10**15

_BINARY: dict[type[ast.operator], Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}


def _power(base: Fraction, exponent: Fraction) -> Fraction:
    if exponent.denominator != 1 or abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"exponent must be a whole number of size at most {MAX_EXPONENT}")
    if base == 0 and exponent < 0:
        raise ToolError("division by zero")
    return base ** int(exponent)


def _evaluate(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        value = Fraction(str(node.value))
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.UAdd, ast.USub)):
        operand = _evaluate(node.operand)
        value = -operand if isinstance(node.op, ast.USub) else operand
    elif isinstance(node, ast.BinOp) and (type(node.op) in _BINARY or isinstance(node.op, ast.Pow)):
        left, right = _evaluate(node.left), _evaluate(node.right)
        if isinstance(node.op, ast.Pow):
            value = _power(left, right)
        elif right == 0 and isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)):
            raise ToolError("division by zero")
        else:
            value = _BINARY[type(node.op)](left, right)
    else:
        raise ToolError(f"unsupported expression element {type(node).__name__}")
    if abs(value) > MAX_MAGNITUDE:
        raise ToolError("number too large")
    return value


def calculate(expr: str) -> Fraction:
    """Exact value of an arithmetic expression; ToolError for anything else."""
    if len(expr) > MAX_EXPR_CHARS:
        raise ToolError(f"expression longer than {MAX_EXPR_CHARS} characters")
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        raise ToolError("cannot parse the expression") from None
    return _evaluate(tree.body)


def calculator_tool(args: Mapping[str, Any]) -> str:
    """``{"expr": "12*3+4"}`` -> ``"40"``."""
    check_keys(args, ("expr",))
    return format_number(calculate(str_arg(args, "expr")))
