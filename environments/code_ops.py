"""The template algebra of the ``code`` family: small operations that chain into a one-line function.

A task is a domain (integers, lists of integers, strings) and a chain of operations, e.g. ``add 3,
times 2`` on ``x``. Each operation knows its words (the prompt), its Python template (the reference
answer) and its meaning as a Python function (the hidden tests' expected values), so the reference
answer, the tests and the deliberately wrong variants all come from one description. Expressions are
rendered with the fewest parentheses Python's precedence allows: operands of a lower precedence level
than an operation needs are wrapped.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Precedence levels of a rendered expression: a sum, a product, an atom (name, call, subscript, display).
ADD, MUL, ATOM = 1, 2, 3

Step = tuple[str, Any]  # (operation name, constant or None)


@dataclass(frozen=True)
class Op:
    name: str
    words: str  # prompt text; "{k}" is the constant's repr
    template: str  # Python expression; "{e}" is the operand, "{k}" the constant's repr
    needs: int  # lowest precedence the operand may have without parentheses
    gives: int
    fn: Callable[[Any, Any], Any]
    consts: tuple[Any, ...] = (None,)
    final: bool = False  # ends a chain (changes the value's type), e.g. sum of a list


@dataclass(frozen=True)
class Domain:
    name: str
    arg: str
    ops: tuple[Op, ...]
    edge_inputs: tuple[Any, ...]
    random_input: Callable[[random.Random], Any]

    def op(self, name: str) -> Op:
        return next(op for op in self.ops if op.name == name)


def _rand_list(rng: random.Random) -> list[int]:
    return [rng.randint(-5, 9) for _ in range(rng.randint(2, 6))]


def _rand_str(rng: random.Random) -> str:
    return "".join(rng.choice("abcdeiou") for _ in range(rng.randint(2, 7)))


INT = Domain(
    name="int",
    arg="x",
    edge_inputs=(0, 1, -1, 7),
    random_input=lambda rng: rng.randint(-50, 50),
    ops=(
        Op("add", "add {k}", "{e}+{k}", ADD, ADD, operator.add, tuple(range(1, 51))),
        Op("sub", "subtract {k}", "{e}-{k}", ADD, ADD, operator.sub, tuple(range(1, 51))),
        Op("mul", "times {k}", "{e}*{k}", MUL, MUL, operator.mul, tuple(range(2, 13))),
        Op("floordiv", "floor-divide by {k}", "{e}//{k}", MUL, MUL, operator.floordiv, tuple(range(2, 11))),
        Op("mod", "mod {k}", "{e}%{k}", MUL, MUL, operator.mod, tuple(range(2, 11))),
        Op("square", "square", "{e}**2", ATOM, MUL, lambda v, _: v**2),
    ),
)

LIST = Domain(
    name="list",
    arg="xs",
    edge_inputs=([], [3]),
    random_input=_rand_list,
    ops=(
        Op(
            "mul_each",
            "times {k} each",
            "[x*{k} for x in {e}]",
            0,
            ATOM,
            lambda v, k: [x * k for x in v],
            tuple(range(2, 10)),
        ),
        Op(
            "add_each",
            "add {k} to each",
            "[x+{k} for x in {e}]",
            0,
            ATOM,
            lambda v, k: [x + k for x in v],
            tuple(range(1, 10)),
        ),
        Op(
            "sub_each",
            "subtract {k} from each",
            "[x-{k} for x in {e}]",
            0,
            ATOM,
            lambda v, k: [x - k for x in v],
            tuple(range(1, 10)),
        ),
        Op("keep_even", "keep even", "[x for x in {e} if x%2==0]", 0, ATOM, lambda v, _: [x for x in v if x % 2 == 0]),
        Op("keep_odd", "keep odd", "[x for x in {e} if x%2==1]", 0, ATOM, lambda v, _: [x for x in v if x % 2 == 1]),
        Op(
            "keep_gt",
            "keep >{k}",
            "[x for x in {e} if x>{k}]",
            0,
            ATOM,
            lambda v, k: [x for x in v if x > k],
            tuple(range(0, 10)),
        ),
        Op(
            "keep_lt",
            "keep <{k}",
            "[x for x in {e} if x<{k}]",
            0,
            ATOM,
            lambda v, k: [x for x in v if x < k],
            tuple(range(1, 10)),
        ),
        Op("reverse", "reverse", "{e}[::-1]", ATOM, ATOM, lambda v, _: v[::-1]),
        Op("sort", "sort", "sorted({e})", 0, ATOM, lambda v, _: sorted(v)),
        Op("sum", "sum", "sum({e})", 0, ATOM, lambda v, _: sum(v), final=True),
        Op("count", "count", "len({e})", 0, ATOM, lambda v, _: len(v), final=True),
    ),
)

_WORDS = ("ab", "xy", "ok", "z", "no", "it", "up", "go")
STR = Domain(
    name="str",
    arg="s",
    edge_inputs=("", "a"),
    random_input=_rand_str,
    ops=(
        Op("reverse", "reverse", "{e}[::-1]", ATOM, ATOM, lambda v, _: v[::-1]),
        Op("upper", "uppercase", "{e}.upper()", ATOM, ATOM, lambda v, _: v.upper()),
        Op("append", "append {k}", "{e}+{k}", ADD, ADD, operator.add, _WORDS),
        # The right operand of + needs a product or tighter, hence MUL: 'ab'+(s+'x').
        Op("prepend", "prepend {k}", "{k}+{e}", MUL, ADD, lambda v, k: k + v, _WORDS),
        Op("first", "first {k}", "{e}[:{k}]", ATOM, ATOM, lambda v, k: v[:k], tuple(range(1, 7))),
        Op("last", "last {k}", "{e}[-{k}:]", ATOM, ATOM, lambda v, k: v[-k:], tuple(range(1, 7))),
        Op("drop_first", "drop first", "{e}[1:]", ATOM, ATOM, lambda v, _: v[1:]),
        Op("drop_last", "drop last", "{e}[:-1]", ATOM, ATOM, lambda v, _: v[:-1]),
        Op("repeat", "repeat {k} times", "{e}*{k}", MUL, MUL, operator.mul, (2, 3)),
        Op("remove", "remove {k}", "{e}.replace({k},'')", ATOM, ATOM, lambda v, k: v.replace(k, ""), tuple("aeiou")),
    ),
)

DOMAINS = {domain.name: domain for domain in (INT, LIST, STR)}


def draw_chain(rng: random.Random, domain: Domain, length: int) -> list[Step]:
    """A random chain of ``length`` operations; no operation twice in a row, a final one only last."""
    steps: list[Step] = []
    for i in range(length):
        last = i == length - 1
        choices = [op for op in domain.ops if (last or not op.final) and (not steps or op.name != steps[-1][0])]
        op = rng.choice(choices)
        steps.append((op.name, rng.choice(op.consts)))
    return steps


def render_steps(domain: Domain, steps: list[Step]) -> list[str]:
    """The Python expression after each step: ``["x+3", "(x+3)*2"]``."""
    expr, level = domain.arg, ATOM
    out: list[str] = []
    for name, k in steps:
        op = domain.op(name)
        operand = f"({expr})" if level < op.needs else expr
        expr, level = op.template.format(e=operand, k=repr(k)), op.gives
        out.append(expr)
    return out


def function_source(domain: Domain, steps: list[Step]) -> str:
    """The reference answer: a one-line function ``def f(x): return ...``."""
    body = render_steps(domain, steps)[-1] if steps else domain.arg
    return f"def f({domain.arg}): return {body}"


def describe(domain: Domain, steps: list[Step]) -> str:
    return ", ".join(domain.op(name).words.format(k=repr(k)) for name, k in steps)


def apply_chain(domain: Domain, steps: list[Step], value: Any) -> Any:
    for name, k in steps:
        value = domain.op(name).fn(value, k)
    return value


def mutations(domain: Domain, steps: list[Step]) -> list[list[Step]]:
    """Plausible wrong chains: a constant off by one, a step dropped, a neighbouring operation used,
    two steps swapped. Some may equal the original on every input; callers filter those out."""
    out: list[list[Step]] = []
    for i, (name, k) in enumerate(steps):
        op = domain.op(name)
        if isinstance(k, int):
            out += [[*steps[:i], (name, k + d), *steps[i + 1 :]] for d in (1, -1) if k + d in op.consts]
        out.append([*steps[:i], *steps[i + 1 :]])
        for other in domain.ops:
            if other.name != name and other.final == op.final:
                out.append([*steps[:i], (other.name, k if k in other.consts else other.consts[0]), *steps[i + 1 :]])
        if i + 1 < len(steps) and not domain.op(steps[i + 1][0]).final:
            out.append([*steps[:i], steps[i + 1], steps[i], *steps[i + 2 :]])
    return out
