"""The contract RL rollout records pass before the trainer sees them (issue 12), and the table they become.

A record (``training.rl.records.RolloutRecord``, read by attribute) is checked in this order, and the first
rule it breaks is the one recorded in the quarantine ledger:

1. ``shape_mismatch``: a non-empty prompt; response ids, mask, log-probs and versions of one length; mask
   values 0/1 (an off-by-one there would train on observations or skip model tokens);
2. ``non_finite_logprob``: every model token's behaviour log-prob finite and <= 0, every observation's 0
   (the trainer divides by these probabilities: a NaN or a positive log-prob poisons the whole batch);
3. ``version_not_monotone``: versions >= 0, never decreasing along the row, none newer than the policy
   being trained (a partial rollout resumes under newer versions only);
4. ``reward_out_of_range``: the reward present, finite and inside the stage's reward range;
5. ``duplicate_id``: one row per rollout id, checked last so a broken copy never shadows a good one.

Kept records become ``RolloutRow`` rows (one per rollout: its ids, sizes, versions, verdict and reward) and
are checked by the pandera model; ``rows_in == kept + quarantined`` is asserted as for every other table.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.typing.pandas import Series

from data_contracts.quarantine import IntakeResult, QuarantineLedger
from data_contracts.schemas import FAMILIES

TABLE = "rollouts"
ROLLOUT_DTYPES = {
    "rollout_id": "str",
    "prompt_id": "str",
    "family": "str",
    "prompt_index": "int64",
    "sample": "int64",
    "step": "int64",
    "trained_version": "int64",
    "min_version": "int64",
    "max_version": "int64",
    "segments": "int64",
    "prompt_tokens": "int64",
    "model_tokens": "int64",
    "observation_tokens": "int64",
    "tool_calls": "int64",
    "finish_reason": "str",
    "correct": "bool",
    "reward": "float64",
    "logprob_mean": "float64",
    "response": "str",
}


class RolloutRow(pa.DataFrameModel):
    """One trained rollout of the KPop RL stage."""

    rollout_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    prompt_id: Series[str] = pa.Field(str_length={"min_value": 1})
    family: Series[str] = pa.Field(isin=FAMILIES)
    prompt_index: Series[int] = pa.Field(ge=0)
    sample: Series[int] = pa.Field(ge=0)
    step: Series[int] = pa.Field(ge=1)
    trained_version: Series[int] = pa.Field(ge=0)
    min_version: Series[int] = pa.Field(ge=0)
    max_version: Series[int] = pa.Field(ge=0)
    segments: Series[int] = pa.Field(ge=0)
    prompt_tokens: Series[int] = pa.Field(ge=1)
    model_tokens: Series[int] = pa.Field(ge=0)
    observation_tokens: Series[int] = pa.Field(ge=0)
    tool_calls: Series[int] = pa.Field(ge=0)
    finish_reason: Series[str] = pa.Field(isin=["eos", "stop", "length"])
    correct: Series[bool]
    reward: Series[float]
    logprob_mean: Series[float] = pa.Field(le=0.0)
    response: Series[str]

    @pa.dataframe_check(name="versions_ordered")
    def versions_ordered(cls, df):
        return (df["min_version"] <= df["max_version"]) & (df["max_version"] <= df["trained_version"])

    @pa.dataframe_check(name="finite_numbers")
    def finite_numbers(cls, df):
        return df["reward"].map(math.isfinite) & df["logprob_mean"].map(math.isfinite)

    class Config:
        strict = True


@dataclass(frozen=True)
class _Broken:
    rule: str
    detail: str


def _shape_problem(record: Any) -> _Broken | None:
    if not record.prompt_ids:
        return _Broken("shape_mismatch", "empty prompt")
    lengths = {
        "response_ids": len(record.response_ids),
        "response_mask": len(record.response_mask),
        "logprobs": len(record.logprobs),
        "versions": len(record.versions),
    }
    if len(set(lengths.values())) != 1:
        return _Broken("shape_mismatch", f"per-token lists differ in length: {lengths}")
    bad = next((m for m in record.response_mask if m not in (0, 1)), None)
    if bad is not None:
        return _Broken("shape_mismatch", f"response_mask holds {bad!r}, expected 0 or 1")
    return None


def _logprob_problem(record: Any) -> _Broken | None:
    for position, (logprob, model) in enumerate(zip(record.logprobs, record.response_mask, strict=True)):
        if model and not (math.isfinite(logprob) and logprob <= 0.0):
            return _Broken("non_finite_logprob", f"model token {position} has log-prob {logprob!r}")
        if not model and logprob != 0.0:
            return _Broken("non_finite_logprob", f"observation token {position} has log-prob {logprob!r}, expected 0")
    return None


def _version_problem(record: Any, trained_version: int) -> _Broken | None:
    versions = list(record.versions)
    if versions and min(versions) < 0:
        return _Broken("version_not_monotone", f"negative version {min(versions)}")
    drop = next((i for i in range(1, len(versions)) if versions[i] < versions[i - 1]), None)
    if drop is not None:
        return _Broken("version_not_monotone", f"version falls from {versions[drop - 1]} to {versions[drop]} at {drop}")
    if versions and versions[-1] > trained_version:
        return _Broken("version_not_monotone", f"token of version {versions[-1]} > trained version {trained_version}")
    return None


def _reward_problem(record: Any, reward_range: tuple[float, float]) -> _Broken | None:
    reward, (low, high) = record.reward, reward_range
    if reward is None or not isinstance(reward, int | float) or not math.isfinite(reward):
        return _Broken("reward_out_of_range", f"reward is {reward!r}, expected a finite number")
    if not low <= reward <= high:
        return _Broken("reward_out_of_range", f"reward {reward} outside [{low}, {high}]")
    return None


def _row(record: Any, step: int, trained_version: int) -> dict[str, Any]:
    model_logprobs = [lp for lp, m in zip(record.logprobs, record.response_mask, strict=True) if m]
    versions = list(record.versions) or [trained_version]
    return {
        "rollout_id": record.rollout_id,
        "prompt_id": record.task_id,
        "family": record.family,
        "prompt_index": record.prompt_index,
        "sample": record.sample,
        "step": step,
        "trained_version": trained_version,
        "min_version": min(versions),
        "max_version": max(versions),
        "segments": len(record.segments),
        "prompt_tokens": len(record.prompt_ids),
        "model_tokens": len(model_logprobs),
        "observation_tokens": len(record.response_mask) - len(model_logprobs),
        "tool_calls": record.tool_calls,
        "finish_reason": record.finish_reason,
        "correct": record.correct,
        "reward": float(record.reward),
        "logprob_mean": sum(model_logprobs) / len(model_logprobs) if model_logprobs else 0.0,
        "response": record.text,
    }


def screen_rollouts(
    records: Sequence[Any],
    ledger: QuarantineLedger,
    *,
    step: int,
    trained_version: int,
    reward_range: tuple[float, float],
    seen_ids: set[str] | None = None,
) -> IntakeResult:
    """The records of one update that pass the contract (module docstring), as ``RolloutRow`` rows.

    ``seen_ids`` carries the rollout ids kept by earlier updates, so the run's table is unique as a whole."""
    before = Counter(ledger.counts(TABLE))
    seen = set() if seen_ids is None else seen_ids
    kept = []
    for record in records:
        broken = (
            _shape_problem(record)
            or _logprob_problem(record)
            or _version_problem(record, trained_version)
            or _reward_problem(record, reward_range)
        )
        if broken is None and record.rollout_id in seen:
            broken = _Broken("duplicate_id", "rollout id trained before (its first valid row is kept)")
        if broken is not None:
            ledger.add(TABLE, f"{record.rollout_id}@{step}", broken.rule, broken.detail, record.text)
            continue
        seen.add(record.rollout_id)
        kept.append(_row(record, step, trained_version))
    frame = pd.DataFrame(kept, columns=list(ROLLOUT_DTYPES)).astype(ROLLOUT_DTYPES)
    result = IntakeResult(TABLE, len(records), frame, dict(Counter(ledger.counts(TABLE)) - before))
    result.check_balance()
    if len(frame):
        RolloutRow.validate(frame)
    return result
