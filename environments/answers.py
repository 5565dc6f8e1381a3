"""The final-answer format every family shares, and how answers compare.

A response ends with the line ``Answer: <value>``; reasoning lines may come before it. Numbers compare
as exact numbers (``12``, ``12.0`` and ``+12`` are equal) so a model is never punished for a harmless
spelling of the right value, while text compares after whitespace, case and a trailing full stop are
normalised.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction

ANSWER_PREFIX = "Answer:"
THINK_MARKERS = ("<think>", "</think>")
# Decimal places beyond which a non-terminating result is rounded (e.g. 10/3 -> 3.333333).
MAX_PLACES = 6

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")


def normalise_space(text: str) -> str:
    return " ".join(text.split())


def extract_answer(response: str) -> str | None:
    """The stripped value of the last ``Answer:`` line, or None when no line starts with it."""
    for line in reversed(response.splitlines()):
        stripped = line.strip()
        if stripped.startswith(ANSWER_PREFIX):
            return stripped[len(ANSWER_PREFIX) :].strip()
    return None


def answer_format_problem(response: str) -> str | None:
    """Why ``response`` breaks the shared answer format, or None when it follows it."""
    if any(marker in response for marker in THINK_MARKERS):
        return "format: <think> marker"
    lines = [line.strip() for line in response.splitlines() if line.strip()]
    if extract_answer(response) is None:
        return "format: no final 'Answer:' line"
    if not lines[-1].startswith(ANSWER_PREFIX):
        return "format: text after the 'Answer:' line"
    if not lines[-1][len(ANSWER_PREFIX) :].strip():
        return "format: empty answer"
    return None


def parse_number(text: str) -> Fraction | None:
    """Exact value of a plain decimal number (an optional trailing full stop allowed), else None."""
    text = normalise_space(text).removesuffix(".")
    if not _NUMBER.fullmatch(text):
        return None
    return Fraction(Decimal(text))


def format_number(value: Fraction) -> str:
    """Shortest exact decimal of ``value``; rounded to MAX_PLACES when it does not terminate."""
    places = next((p for p in range(MAX_PLACES + 1) if (value * 10**p).denominator == 1), MAX_PLACES)
    scaled = round(value * 10**places)
    sign = "-" if scaled < 0 else ""
    digits = str(abs(scaled)).rjust(places + 1, "0")
    whole, frac = digits[: len(digits) - places], digits[len(digits) - places :].rstrip("0")
    text = f"{sign}{whole}.{frac}" if frac else f"{sign}{whole}"
    return "0" if text == "-0" else text


def _normalise_text(text: str) -> str:
    return normalise_space(text).removesuffix(".").strip().casefold()


def answers_match(got: str, want: str) -> tuple[bool, str]:
    """Compare an extracted answer with the canonical one; returns (correct, reason)."""
    want_number = parse_number(want)
    if want_number is not None:
        got_number = parse_number(got)
        if got_number is None:
            return False, f"wrong type: want a number, got {got!r}"
        if got_number != want_number:
            return False, f"wrong answer: got {got}, want {want}"
        return True, "correct"
    if _normalise_text(got) != _normalise_text(want):
        return False, f"wrong answer: got {got}, want {want}"
    return True, "correct"
