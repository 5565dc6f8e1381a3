"""pandera models for every table that crosses a stage boundary.

Each model is the contract of one table: the producing stage validates before it writes, the consuming
stage validates after it reads. Raw intake rows are *not* modelled strictly here — bad raw rows are
quarantined by ``data_contracts.quarantine`` before anything reaches these models.
"""

from __future__ import annotations

import pandera.pandas as pa
from pandera.typing.pandas import Series

from configs.data import ENVIRONMENT_FAMILIES, RESPONSE_MAX_CHARS

FAMILIES = list(ENVIRONMENT_FAMILIES)
QUARANTINE_RULES = [
    "null_field",
    "wrong_type",
    "empty_text",
    "invalid_utf8",
    "control_characters",
    "unknown_field",
    "invalid_json",
    "json_too_deep",
    "number_too_large",
    "duplicate_id",
    "oversize",
    "too_short",
    "exact_duplicate",
    "near_duplicate",
    "eval_contamination",
    "unverified_label",
    "chosen_equals_rejected",
    "length_out_of_bounds",
    "reward_margin_not_positive",
    "top_k_mismatch",
    "shape_mismatch",
    "non_finite_logprob",
    "invalid_topk",
    # RL rollout records (data_contracts.rollouts); shape_mismatch and non_finite_logprob apply there too
    "version_not_monotone",
    "reward_out_of_range",
]


def _no_surrogates(text: Series[str]) -> Series[bool]:
    # Lone surrogates are what invalid UTF-8 turns into under errors="surrogateescape".
    return text.map(lambda s: not any("\ud800" <= ch <= "\udfff" for ch in s))


class PretrainDocument(pa.DataFrameModel):
    """A document kept for the pre-training mix."""

    doc_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    source: Series[str] = pa.Field(str_length={"min_value": 1})
    text: Series[str] = pa.Field(str_length={"min_value": 1})
    n_chars: Series[int] = pa.Field(gt=0)
    split: Series[str] = pa.Field(isin=["train", "heldout"])

    @pa.check("text", name="valid_utf8")
    def text_is_valid_utf8(cls, text: Series[str]) -> Series[bool]:
        return _no_surrogates(text)

    @pa.check("text", name="not_blank")
    def text_not_blank(cls, text: Series[str]) -> Series[bool]:
        return text.str.strip().str.len() > 0

    @pa.dataframe_check(name="n_chars_matches_text")
    def n_chars_matches(cls, df):
        return df["n_chars"] == df["text"].str.len()

    class Config:
        strict = True
        coerce = False


class PromptRow(pa.DataFrameModel):
    """An environment task: RL prompt sets and evaluation sets."""

    prompt_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    family: Series[str] = pa.Field(isin=FAMILIES)
    difficulty: Series[int] = pa.Field(ge=1, le=5)
    prompt: Series[str] = pa.Field(str_length={"min_value": 1})
    answer: Series[str] = pa.Field(str_length={"min_value": 1})
    payload: Series[str]

    @pa.check("payload", name="payload_is_json_object")
    def payload_is_json(cls, payload: Series[str]) -> Series[bool]:
        import json

        def ok(text: str) -> bool:
            try:
                return isinstance(json.loads(text), dict)
            except ValueError:
                return False

        return payload.map(ok)

    class Config:
        strict = True


class SFTExample(pa.DataFrameModel):
    """A verified (prompt, response) pair for supervised fine-tuning."""

    prompt_id: Series[str] = pa.Field(unique=True)
    family: Series[str] = pa.Field(isin=FAMILIES)
    difficulty: Series[int] = pa.Field(ge=1, le=5)
    prompt: Series[str] = pa.Field(str_length={"min_value": 1})
    response: Series[str] = pa.Field(str_length={"min_value": 1, "max_value": RESPONSE_MAX_CHARS})
    style: Series[str] = pa.Field(isin=["short", "cot", "verbose"])
    correct: Series[bool] = pa.Field(isin=[True])
    n_chars: Series[int] = pa.Field(gt=0)

    class Config:
        strict = True


class CandidateResponse(pa.DataFrameModel):
    """Several reference responses per prompt, verified: raw material for shortest-correct and preferences."""

    prompt_id: Series[str]
    candidate_idx: Series[int] = pa.Field(ge=0)
    family: Series[str] = pa.Field(isin=FAMILIES)
    difficulty: Series[int] = pa.Field(ge=1, le=5)
    prompt: Series[str] = pa.Field(str_length={"min_value": 1})
    response: Series[str] = pa.Field(str_length={"min_value": 1, "max_value": RESPONSE_MAX_CHARS})
    style: Series[str] = pa.Field(isin=["short", "cot", "verbose", "wrong"])
    correct: Series[bool]
    n_chars: Series[int] = pa.Field(gt=0)

    @pa.dataframe_check(name="unique_prompt_candidate")
    def unique_key(cls, df):
        return ~df.duplicated(subset=["prompt_id", "candidate_idx"], keep=False)

    @pa.dataframe_check(name="wrong_style_is_incorrect")
    def wrong_is_wrong(cls, df):
        return (df["style"] != "wrong") | (~df["correct"])

    class Config:
        strict = True


class PreferencePair(pa.DataFrameModel):
    """A chosen/rejected pair built from verified responses, with the bidirectional reward margin."""

    pair_id: Series[str] = pa.Field(unique=True)
    prompt_id: Series[str]
    family: Series[str] = pa.Field(isin=FAMILIES)
    prompt: Series[str] = pa.Field(str_length={"min_value": 1})
    chosen: Series[str] = pa.Field(str_length={"min_value": 1, "max_value": RESPONSE_MAX_CHARS})
    rejected: Series[str] = pa.Field(str_length={"min_value": 1, "max_value": RESPONSE_MAX_CHARS})
    chosen_reward: Series[float]
    rejected_reward: Series[float]
    chosen_verified: Series[bool] = pa.Field(isin=[True])

    @pa.dataframe_check(name="chosen_differs_from_rejected")
    def chosen_differs(cls, df):
        return df["chosen"] != df["rejected"]

    @pa.dataframe_check(name="chosen_reward_above_rejected")
    def margin_positive(cls, df):
        return df["chosen_reward"] > df["rejected_reward"]

    class Config:
        strict = True


class QuarantineRow(pa.DataFrameModel):
    """A rejected input row with the rule it broke; the quarantine file is itself versioned."""

    row_id: Series[str] = pa.Field(nullable=False)
    table: Series[str]
    rule: Series[str] = pa.Field(isin=QUARANTINE_RULES)
    detail: Series[str]
    excerpt: Series[str]

    class Config:
        strict = True


class EvalResult(pa.DataFrameModel):
    """One row per (checkpoint, family): the evaluation harness's table."""

    checkpoint: Series[str]
    family: Series[str] = pa.Field(isin=[*FAMILIES, "all"])
    n: Series[int] = pa.Field(gt=0)
    accuracy: Series[float] = pa.Field(ge=0.0, le=1.0)
    format_rate: Series[float] = pa.Field(ge=0.0, le=1.0)
    mean_tokens: Series[float] = pa.Field(ge=0.0)
    mean_tokens_correct: Series[float] = pa.Field(ge=0.0, nullable=True)

    class Config:
        strict = True
