"""pandera models of the evaluation stage's tables: the checkpoint comparison (long format, one metric per
row) and the long-context retrieval grid."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.typing.pandas import Series

from data_contracts.schemas import FAMILIES

# "all" = every prompt, "agentic" = the multi-turn tool families together.
COMPARISON_FAMILIES = [*FAMILIES, "all", "agentic"]
RATE_METRICS = ("accuracy", "format_rate", "agentic_success")
# Means over the correct answers / successful episodes only: undefined (null) when there are none.
PER_SUCCESS_METRICS = ("tokens_per_correct", "tool_calls_per_success")
NONNEGATIVE_METRICS = ("tokens_per_answer", "tool_calls_per_episode", "heldout_loss", *PER_SUCCESS_METRICS)
PASS_AT_K = re.compile(r"pass@([1-9]\d*)")
# Namespaces whose names come from elsewhere: the RL stage's mismatch summary and lm-evaluation-harness.
OPEN_METRICS = re.compile(r"(mismatch|lm_eval)\.\S+")


def metric_is_known(metric: str) -> bool:
    return (
        metric in RATE_METRICS
        or metric in NONNEGATIVE_METRICS
        or PASS_AT_K.fullmatch(metric) is not None
        or OPEN_METRICS.fullmatch(metric) is not None
    )


def _is_rate(metric: pd.Series) -> pd.Series:
    return metric.isin(RATE_METRICS) | metric.str.fullmatch(PASS_AT_K.pattern)


class ComparisonRow(pa.DataFrameModel):
    """One metric of one checkpoint on one family. ``n`` counts what ``value`` averages: prompts (rates,
    tokens per answer), correct answers or successful episodes (per-success metrics), held-out windows
    (loss); 0 for a value another stage reported (``mismatch.*``)."""

    checkpoint: Series[str] = pa.Field(str_length={"min_value": 1})
    family: Series[str] = pa.Field(isin=COMPARISON_FAMILIES)
    metric: Series[str]
    value: Series[float] = pa.Field(nullable=True)
    n: Series[int] = pa.Field(ge=0)

    @pa.check("metric", name="known_metric")
    def known_metric(cls, metric: Series[str]) -> Series[bool]:
        return metric.map(metric_is_known)

    @pa.dataframe_check(name="unique_checkpoint_family_metric")
    def unique_key(cls, df: pd.DataFrame) -> pd.Series:
        return ~df.duplicated(subset=["checkpoint", "family", "metric"], keep=False)

    @pa.dataframe_check(name="rates_in_unit_interval")
    def rates_bounded(cls, df: pd.DataFrame) -> pd.Series:
        # A null is judged by null_only_without_successes alone.
        return ~_is_rate(df["metric"]) | df["value"].isna() | df["value"].between(0.0, 1.0)

    @pa.dataframe_check(name="counts_nonnegative")
    def counts_nonnegative(cls, df: pd.DataFrame) -> pd.Series:
        return ~df["metric"].isin(NONNEGATIVE_METRICS) | df["value"].isna() | (df["value"] >= 0)

    @pa.dataframe_check(name="null_only_without_successes")
    def null_iff_no_success(cls, df: pd.DataFrame) -> pd.Series:
        # A per-success mean is null exactly when nothing succeeded; every other metric always has a value.
        undefined = df["metric"].isin(PER_SUCCESS_METRICS) & (df["n"] == 0)
        return df["value"].isna() == undefined

    @pa.dataframe_check(name="finite_values")
    def finite(cls, df: pd.DataFrame) -> pd.Series:
        return df["value"].isna() | np.isfinite(df["value"].astype(float))

    @pa.dataframe_check(name="pass_at_k_nondecreasing_in_k")
    def pass_at_k_monotone(cls, df: pd.DataFrame) -> pd.Series:
        # pass@k of one prompt cannot fall as k grows, so neither can its mean over prompts.
        k = df["metric"].str.extract(PASS_AT_K.pattern, expand=False).astype(float)
        ok = pd.Series(True, index=df.index)
        rows = df.assign(k=k).dropna(subset=["k"])
        for _, group in rows.groupby(["checkpoint", "family"]):
            ordered = group.sort_values("k")
            bad = ordered["value"].diff() < -1e-12
            ok.loc[bad[bad].index] = False
        return ok

    class Config:
        strict = True
        coerce = False


class RetrievalRow(pa.DataFrameModel):
    """Passkey retrieval of one checkpoint at one (prompt length, needle depth): ``n`` haystacks, ``correct``
    retrieved; ``prompt_tokens`` is their mean real length; ``beyond_context`` marks lengths past the context
    the checkpoint was trained on."""

    checkpoint: Series[str] = pa.Field(str_length={"min_value": 1})
    length: Series[int] = pa.Field(gt=0)
    depth: Series[float] = pa.Field(ge=0.0, le=1.0)
    n: Series[int] = pa.Field(gt=0)
    correct: Series[int] = pa.Field(ge=0)
    accuracy: Series[float] = pa.Field(ge=0.0, le=1.0)
    prompt_tokens: Series[float] = pa.Field(gt=0.0)
    beyond_context: Series[bool]

    @pa.dataframe_check(name="unique_checkpoint_length_depth")
    def unique_key(cls, df: pd.DataFrame) -> pd.Series:
        return ~df.duplicated(subset=["checkpoint", "length", "depth"], keep=False)

    @pa.dataframe_check(name="correct_at_most_n")
    def correct_bounded(cls, df: pd.DataFrame) -> pd.Series:
        return df["correct"] <= df["n"]

    @pa.dataframe_check(name="accuracy_is_correct_over_n")
    def accuracy_consistent(cls, df: pd.DataFrame) -> pd.Series:
        return (df["accuracy"] - df["correct"] / df["n"]).abs() < 1e-9

    @pa.dataframe_check(name="prompt_fits_length")
    def prompt_fits(cls, df: pd.DataFrame) -> pd.Series:
        return df["prompt_tokens"] <= df["length"]

    class Config:
        strict = True
        coerce = False
