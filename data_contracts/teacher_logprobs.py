"""The distillation stage's teacher table: verified teacher samples with the teacher's top-k next-token
log-probs at every response position, what logit distillation learns from.

One row per sample. Token sequences are lists; the top-k is stored flattened, position-major:

    response_ids   [R]        the sample's response tokens (model tokens and tool observations)
    response_mask  [R]        1 = a model-written token (a distillation target), 0 = an observation
    topk_ids       [R * K]    the teacher's K most likely ids at each response position
    topk_logprobs  [R * K]    their log-probs under the teacher (temperature 1)

Each row is checked in this order, and the first rule it breaks is the one recorded:

1. a usable ``sample_id`` (``null_field`` / ``wrong_type``);
2. the verified label present and True (``unverified_label``; ``wrong_type`` when it is not a bool);
3. every token column a list of integers, every log-prob a number (``wrong_type``);
4. ``k`` equal to the configured top-k, the same for every row (``top_k_mismatch``);
5. consistent shapes: a non-empty prompt and response, ``len(response_mask) == R``, top-k columns of
   ``R * k`` entries, ``n_tokens == sum(response_mask)`` (``shape_mismatch``);
6. finite log-probs (``non_finite_logprob``);
7. a valid top-k at each position: ids in ``[0, vocab_size)`` and distinct, log-probs <= 0, their
   probabilities summing to at most 1 (``invalid_topk``): the loss's rest bucket needs all three;
8. prompt + response within ``max_tokens`` (``length_out_of_bounds``);
9. one row per ``sample_id`` (``duplicate_id``), checked last so that a broken copy never shadows a good one.

Broken rows go to the quarantine ledger with their rule, the kept rows are checked by the pandera model
``TeacherSample``, and ``rows_in == kept + quarantined`` is asserted.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing.pandas import Series

from data_contracts.quarantine import IntakeResult, QuarantineLedger, is_missing
from data_contracts.schemas import FAMILIES
from data_contracts.training_rows import Broken

TABLE = "teacher_samples"
TOKEN_COLUMNS = ("prompt_ids", "response_ids", "response_mask", "topk_ids")
TEACHER_DTYPES = {
    "sample_id": "str",
    "prompt_id": "str",
    "family": "str",
    "teacher": "str",
    "prompt_ids": "object",
    "response_ids": "object",
    "response_mask": "object",
    "topk_ids": "object",
    "topk_logprobs": "object",
    "k": "int64",
    "correct": "bool",
    "n_tokens": "int64",
}
# exp of a log-prob rounded in fp32 may overshoot; a top-k "mass" of 1 + 1e-4 is rounding, not a bug.
MASS_TOLERANCE = 1e-4


@dataclass(frozen=True)
class TeacherBounds:
    top_k: int
    vocab_size: int
    max_tokens: int


def _shapes_hold(row: Mapping[str, Any]) -> bool:
    r, k = len(row["response_ids"]), int(row["k"])
    return (
        len(row["prompt_ids"]) > 0
        and r > 0
        and len(row["response_mask"]) == r
        and len(row["topk_ids"]) == len(row["topk_logprobs"]) == r * k
        and int(row["n_tokens"]) == int(np.sum(row["response_mask"]))
    )


class TeacherSample(pa.DataFrameModel):
    """A verified teacher sample with the teacher's top-k log-probs per response position."""

    sample_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    prompt_id: Series[str] = pa.Field(str_length={"min_value": 1})
    family: Series[str] = pa.Field(isin=FAMILIES)
    teacher: Series[str] = pa.Field(str_length={"min_value": 1})
    prompt_ids: Series[object]
    response_ids: Series[object]
    response_mask: Series[object]
    topk_ids: Series[object]
    topk_logprobs: Series[object]
    k: Series[int] = pa.Field(ge=1)
    correct: Series[bool] = pa.Field(isin=[True])
    n_tokens: Series[int] = pa.Field(ge=1)

    @pa.dataframe_check(name="shapes_consistent")
    def shapes_consistent(cls, df: pd.DataFrame) -> pd.Series:
        return df.apply(_shapes_hold, axis=1).astype(bool)

    @pa.dataframe_check(name="k_constant")
    def k_constant(cls, df: pd.DataFrame) -> bool:
        return df["k"].nunique() <= 1

    @pa.check("topk_logprobs", name="logprobs_finite")
    def logprobs_finite(cls, logprobs: Series[object]) -> Series[bool]:
        return logprobs.map(lambda v: bool(np.isfinite(np.asarray(v, dtype=np.float64)).all()))

    class Config:
        strict = True


def _int_list(value: Any, column: str) -> list[int] | Broken:
    # Lists as built, numpy arrays as parquet reads them back.
    if not isinstance(value, list | tuple | np.ndarray):
        if is_missing(value):
            return Broken("null_field", f"{column} is null")
        return Broken("wrong_type", f"{column} is {type(value).__name__}, expected a list of ints", value)
    items = list(value)
    if not all(isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_) for v in items):
        return Broken("wrong_type", f"{column} holds a value that is not an int", value)
    return [int(v) for v in items]


def _float_list(value: Any, column: str) -> list[float] | Broken:
    if not isinstance(value, list | tuple | np.ndarray):
        if is_missing(value):
            return Broken("null_field", f"{column} is null")
        return Broken("wrong_type", f"{column} is {type(value).__name__}, expected a list of floats", value)
    items = list(value)
    if not all(isinstance(v, int | float | np.integer | np.floating) and not isinstance(v, bool) for v in items):
        return Broken("wrong_type", f"{column} holds a value that is not a number", value)
    return [float(v) for v in items]


def _verified(value: Any) -> Broken | None:
    if is_missing(value):
        return Broken("unverified_label", "correct is missing: the sample was never verified")
    if not isinstance(value, bool | np.bool_):
        return Broken("wrong_type", f"correct is {type(value).__name__} {value!r}, expected bool", value)
    return None if value else Broken("unverified_label", "correct is False: the sample failed its verifier")


def _topk_rule(ids: list[int], logprobs: list[float], k: int, vocab_size: int) -> Broken | None:
    for position in range(len(ids) // k):
        at_ids = ids[position * k : (position + 1) * k]
        at_logp = logprobs[position * k : (position + 1) * k]
        if any(not 0 <= i < vocab_size for i in at_ids):
            return Broken("invalid_topk", f"position {position}: id outside [0, {vocab_size})", at_ids)
        if len(set(at_ids)) != k:
            return Broken("invalid_topk", f"position {position}: repeated id among the top-{k}", at_ids)
        if max(at_logp) > MASS_TOLERANCE:
            return Broken("invalid_topk", f"position {position}: positive log-prob {max(at_logp)}", at_logp)
        mass = sum(math.exp(lp) for lp in at_logp)
        if mass > 1.0 + MASS_TOLERANCE:
            return Broken("invalid_topk", f"position {position}: top-{k} probabilities sum to {mass:.6f} > 1", at_logp)
    return None


def _check(row: Mapping[str, Any], bounds: TeacherBounds) -> dict[str, Any] | Broken:
    broken = _verified(row.get("correct"))
    if broken:
        return broken
    seqs: dict[str, Any] = {c: _int_list(row.get(c), c) for c in TOKEN_COLUMNS}
    seqs["topk_logprobs"] = _float_list(row.get("topk_logprobs"), "topk_logprobs")
    broken = next((v for v in seqs.values() if isinstance(v, Broken)), None)
    if broken:
        return broken
    k = row.get("k")
    if not isinstance(k, int | np.integer) or isinstance(k, bool) or int(k) != bounds.top_k:
        return Broken("top_k_mismatch", f"k is {k!r}, the stage records top-{bounds.top_k}", k)
    shaped = {**row, **seqs, "k": int(k)}
    if not isinstance(row.get("n_tokens"), int | np.integer) or not _shapes_hold(shaped):
        r = len(seqs["response_ids"])
        detail = (
            f"prompt {len(seqs['prompt_ids'])} ids, response {r}, mask {len(seqs['response_mask'])}, "
            f"top-k ids {len(seqs['topk_ids'])} and log-probs {len(seqs['topk_logprobs'])} (want {r} x {k}), "
            f"n_tokens {row.get('n_tokens')!r}"
        )
        return Broken("shape_mismatch", detail, row.get("sample_id"))
    if not all(math.isfinite(v) for v in seqs["topk_logprobs"]):
        return Broken("non_finite_logprob", "topk_logprobs holds NaN or an infinity", seqs["topk_logprobs"])
    broken = _topk_rule(seqs["topk_ids"], seqs["topk_logprobs"], bounds.top_k, bounds.vocab_size)
    if broken:
        return broken
    tokens = len(seqs["prompt_ids"]) + len(seqs["response_ids"])
    if tokens > bounds.max_tokens:
        return Broken("length_out_of_bounds", f"prompt + response: {tokens} tokens > max {bounds.max_tokens}")
    return {**shaped, "correct": True, "n_tokens": int(row["n_tokens"])}


def screen_teacher_samples(
    frame: pd.DataFrame, ledger: QuarantineLedger, *, top_k: int, vocab_size: int, max_tokens: int, table: str = TABLE
) -> IntakeResult:
    """Screen ``TeacherSample``-shaped rows (module docstring) into kept rows and the ledger."""
    bounds = TeacherBounds(top_k, vocab_size, max_tokens)
    before = Counter(ledger.counts(table))
    kept: list[dict[str, Any]] = []
    seen: set[str] = set()
    for position, row in enumerate(frame.to_dict("records")):
        sample_id = row.get("sample_id")
        if is_missing(sample_id):
            outcome: dict[str, Any] | Broken = Broken("null_field", "sample_id is null/NaN")
        elif not isinstance(sample_id, str) or not sample_id:
            outcome = Broken("wrong_type", f"sample_id is {type(sample_id).__name__} {sample_id!r}", sample_id)
        else:
            outcome = _check(row, bounds)
        if not isinstance(outcome, Broken) and sample_id in seen:
            outcome = Broken("duplicate_id", "sample_id seen before (its first valid row is kept)", sample_id)
        if isinstance(outcome, Broken):
            name = sample_id if isinstance(sample_id, str) and sample_id else f"#{position}"
            ledger.add(table, name, outcome.rule, outcome.detail, outcome.value)
            continue
        seen.add(sample_id)
        kept.append(outcome)
    kept_frame = pd.DataFrame(kept, columns=list(TEACHER_DTYPES)).astype(TEACHER_DTYPES)
    result = IntakeResult(table, len(frame), kept_frame, dict(Counter(ledger.counts(table)) - before))
    result.check_balance()
    if len(kept_frame):
        TeacherSample.validate(kept_frame)
    return result
