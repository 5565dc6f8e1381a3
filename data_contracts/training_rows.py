"""Row rules for the tables post-training learns from: SFT rows and preference pairs.

Each row is checked in this order, and the first rule it breaks is the one recorded:

1. a usable id (``null_field`` / ``wrong_type``);
2. text fields present, strings, valid UTF-8, not blank (``null_field`` / ``wrong_type`` / ``invalid_utf8`` /
   ``empty_text``);
3. the verified label present and True (``unverified_label``; ``wrong_type`` when it is not a bool);
4. pairs only: chosen != rejected (``chosen_equals_rejected``), finite rewards (``null_field`` /
   ``wrong_type``) with chosen above rejected (``reward_margin_not_positive``);
5. lengths within bounds (``length_out_of_bounds``): characters of each response, tokens of prompt + response;
6. one row per id (``duplicate_id``), checked last so that a broken copy never shadows a good one.

Broken rows go to the quarantine ledger with their rule; the kept rows are checked by the pandera model and
the great-expectations suite, and ``rows_in == kept + quarantined`` is asserted. Columns the rows inherit
from an already-validated table (family, difficulty, style, a pair's prompt_id) are left to the pandera
model: a bad value there is a bug upstream, and it raises.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from data_contracts.expectations import validate_table
from data_contracts.quarantine import IntakeResult, QuarantineLedger, decode_text, is_missing
from data_contracts.schemas import PreferencePair, SFTExample

CountTokens = Callable[[str], int]

SFT_DTYPES = {
    "prompt_id": "str",
    "family": "str",
    "difficulty": "int64",
    "prompt": "str",
    "response": "str",
    "style": "str",
    "correct": "bool",
    "n_chars": "int64",
}
PAIR_DTYPES = {
    "pair_id": "str",
    "prompt_id": "str",
    "family": "str",
    "prompt": "str",
    "chosen": "str",
    "rejected": "str",
    "chosen_reward": "float64",
    "rejected_reward": "float64",
    "chosen_verified": "bool",
}


class NoRowsLeft(ValueError):
    """Every row of a training table was quarantined (or there were none): training would learn nothing."""


@dataclass(frozen=True)
class Broken:
    """The rule a row breaks, why, and the value a reviewer should see in the quarantine excerpt."""

    rule: str
    detail: str
    value: Any = ""


@dataclass(frozen=True)
class Bounds:
    max_response_chars: int
    max_tokens: int
    count_tokens: CountTokens


Check = Callable[[Mapping[str, Any], Bounds], dict[str, Any] | Broken]


def _id_rule(value: Any, column: str) -> Broken | None:
    if is_missing(value):
        return Broken("null_field", f"{column} is null/NaN")
    if not isinstance(value, str) or not value:
        return Broken("wrong_type", f"{column} is {type(value).__name__} {value!r}, expected a non-empty str", value)
    return None


def _texts(row: Mapping[str, Any], columns: tuple[str, ...]) -> dict[str, str] | Broken:
    texts = {}
    for column in columns:
        text, rule, detail = decode_text(row.get(column))
        if rule is not None:
            return Broken(rule, f"{column}: {detail}", row.get(column, ""))
        assert text is not None
        texts[column] = text
    return texts


def _verified(value: Any, column: str, excerpt: str) -> Broken | None:
    if is_missing(value):
        return Broken("unverified_label", f"{column} is missing: the response was never verified", excerpt)
    if not isinstance(value, bool | np.bool_):
        return Broken("wrong_type", f"{column} is {type(value).__name__} {value!r}, expected bool", value)
    if not value:
        return Broken("unverified_label", f"{column} is False: the response failed its verifier", excerpt)
    return None


def _reward(value: Any, column: str) -> float | Broken:
    if is_missing(value):
        return Broken("null_field", f"{column} is null/NaN")
    # bool is an int to Python, but a reward of True is a column mix-up, not a number.
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.integer | np.floating):
        return Broken("wrong_type", f"{column} is {type(value).__name__} {value!r}, expected float", value)
    if not math.isfinite(value):
        return Broken("null_field", f"{column} is {value}, expected a finite number", value)
    return float(value)


def _length_rule(prompt: str, responses: Mapping[str, str], bounds: Bounds, *, reserved: int) -> Broken | None:
    """``reserved``: tokens the consumer adds to each example (SFT packing appends EOS)."""
    for column, response in responses.items():
        if len(response) > bounds.max_response_chars:
            detail = f"{column}: {len(response)} chars > max {bounds.max_response_chars}"
            return Broken("length_out_of_bounds", detail, response)
        tokens = bounds.count_tokens(prompt) + bounds.count_tokens(response) + reserved
        if tokens > bounds.max_tokens:
            detail = f"prompt + {column}: {tokens} tokens > max {bounds.max_tokens}"
            return Broken("length_out_of_bounds", detail, response)
    return None


def _check_sft(row: Mapping[str, Any], bounds: Bounds) -> dict[str, Any] | Broken:
    texts = _texts(row, ("prompt", "response"))
    if isinstance(texts, Broken):
        return texts
    broken = _verified(row.get("correct"), "correct", texts["response"]) or _length_rule(
        texts["prompt"], {"response": texts["response"]}, bounds, reserved=1
    )
    return broken or {**row, **texts, "correct": True}


def _check_pair(row: Mapping[str, Any], bounds: Bounds) -> dict[str, Any] | Broken:
    texts = _texts(row, ("prompt", "chosen", "rejected"))
    if isinstance(texts, Broken):
        return texts
    broken = _verified(row.get("chosen_verified"), "chosen_verified", texts["chosen"])
    if broken:
        return broken
    if texts["chosen"] == texts["rejected"]:
        return Broken("chosen_equals_rejected", "chosen and rejected are the same text", texts["chosen"])
    rewards = {c: _reward(row.get(c), c) for c in ("chosen_reward", "rejected_reward")}
    broken = next((r for r in rewards.values() if isinstance(r, Broken)), None)
    if broken:
        return broken
    if rewards["chosen_reward"] <= rewards["rejected_reward"]:
        detail = f"chosen_reward {rewards['chosen_reward']} <= rejected_reward {rewards['rejected_reward']}"
        return Broken("reward_margin_not_positive", detail, texts["chosen"])
    sides = {"chosen": texts["chosen"], "rejected": texts["rejected"]}
    broken = _length_rule(texts["prompt"], sides, bounds, reserved=0)
    return broken or {**row, **texts, **rewards, "chosen_verified": True}


def _screen(
    frame: pd.DataFrame,
    ledger: QuarantineLedger,
    *,
    table: str,
    id_col: str,
    dtypes: Mapping[str, str],
    check: Check,
    bounds: Bounds,
    schema: Any,
    suite: str,
) -> IntakeResult:
    before = Counter(ledger.counts(table))
    kept: list[dict[str, Any]] = []
    seen: set[str] = set()
    for position, row in enumerate(frame.to_dict("records")):
        row_id = row.get(id_col)
        outcome = _id_rule(row_id, id_col) or check(row, bounds)
        if not isinstance(outcome, Broken) and row_id in seen:
            outcome = Broken("duplicate_id", f"{id_col} seen before (its first valid row is kept)", row_id)
        if isinstance(outcome, Broken):
            name = row_id if isinstance(row_id, str) and row_id else f"#{position}"
            ledger.add(table, name, outcome.rule, outcome.detail, outcome.value)
            continue
        seen.add(row_id)
        kept.append(outcome)
    kept_frame = pd.DataFrame(kept, columns=list(dtypes)).astype(dict(dtypes))
    result = IntakeResult(table, len(frame), kept_frame, dict(Counter(ledger.counts(table)) - before))
    result.check_balance()
    # An empty table has no rows to check and fails the suites' row-count expectation by definition;
    # whether that is an error is the caller's call (``require_kept``).
    if len(kept_frame):
        schema.validate(kept_frame)
        validate_table(kept_frame, suite, table=table, max_response_chars=bounds.max_response_chars)
    return result


def screen_sft_rows(
    frame: pd.DataFrame,
    ledger: QuarantineLedger,
    *,
    max_response_chars: int,
    max_tokens: int,
    count_tokens: CountTokens,
    table: str = "sft_rows",
) -> IntakeResult:
    """Screen ``SFTExample``-shaped rows (module docstring); ``max_tokens`` bounds prompt + response + EOS."""
    return _screen(
        frame,
        ledger,
        table=table,
        id_col="prompt_id",
        dtypes=SFT_DTYPES,
        check=_check_sft,
        bounds=Bounds(max_response_chars, max_tokens, count_tokens),
        schema=SFTExample,
        suite="sft",
    )


def screen_preference_pairs(
    frame: pd.DataFrame,
    ledger: QuarantineLedger,
    *,
    max_response_chars: int,
    max_tokens: int,
    count_tokens: CountTokens,
    table: str = "preference_pairs",
) -> IntakeResult:
    """Screen ``PreferencePair``-shaped rows (module docstring); ``max_tokens`` bounds prompt + either side."""
    return _screen(
        frame,
        ledger,
        table=table,
        id_col="pair_id",
        dtypes=PAIR_DTYPES,
        check=_check_pair,
        bounds=Bounds(max_response_chars, max_tokens, count_tokens),
        schema=PreferencePair,
        suite="preferences",
    )


def require_kept(result: IntakeResult, *, remedy: str) -> None:
    """Raise ``NoRowsLeft`` (naming the rules that emptied the table and ``remedy``) when no row was kept."""
    if len(result.kept):
        return
    if result.rows_in == 0:
        raise NoRowsLeft(f"{result.table}: no rows to train on. {remedy}")
    rules = ", ".join(f"{rule}={n}" for rule, n in sorted(result.quarantined_by_rule.items()))
    raise NoRowsLeft(
        f"{result.table}: all {result.rows_in} rows were quarantined ({rules}); nothing left to train on. {remedy}"
    )
