"""Row rules for the context-extension retrieval haystacks (``corpus.haystack``, ``haystack.parquet``).

Each row is checked in this order; the first rule it breaks is the one recorded in the quarantine ledger:

1. a usable id (``null_field`` / ``wrong_type``), text fields present, strings, not blank (``empty_text``);
2. the answer is a number the prompt's needle states (``unverified_label``): a row teaching a key the text does
   not hold would teach guessing;
3. the prompt fits its length (``length_out_of_bounds``), counted with the stage's tokenizer;
4. the needle's name is not one an evaluation haystack asks about (``eval_contamination``);
5. one row per id (``duplicate_id``).

Kept rows pass the pandera model; ``rows_in == kept + quarantined`` is asserted.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Collection
from typing import Any

import pandas as pd
import pandera.pandas as pa
from pandera.typing import Series

from data_contracts.quarantine import QuarantineLedger, is_missing

TABLE = "haystack"
TEXT_FIELDS = ("haystack_id", "prompt", "answer", "name")


class HaystackRow(pa.DataFrameModel):
    """One training haystack: a prompt of at most ``length`` tokens with the needle at ``depth``, its answer."""

    haystack_id: Series[str] = pa.Field(unique=True, str_length={"min_value": 1})
    length: Series[int] = pa.Field(gt=0)
    depth: Series[float] = pa.Field(ge=0.0, le=1.0)
    prompt: Series[str] = pa.Field(str_length={"min_value": 1})
    answer: Series[str] = pa.Field(str_matches=r"^\d+$")
    name: Series[str] = pa.Field(str_length={"min_value": 1})
    prompt_tokens: Series[int] = pa.Field(gt=0)

    @pa.dataframe_check(name="prompt_fits_length")
    def prompt_fits(cls, df: pd.DataFrame) -> pd.Series:
        return df["prompt_tokens"] <= df["length"]

    @pa.dataframe_check(name="needle_states_answer")
    def needle_states_answer(cls, df: pd.DataFrame) -> pd.Series:
        return pd.Series([needle(n, a) in p for n, a, p in zip(df["name"], df["answer"], df["prompt"], strict=True)])

    class Config:
        strict = True
        coerce = False


def needle(name: str, answer: str) -> str:
    return f"The pass key of {name} is {answer}."


def _problem(row: dict[str, Any], count_tokens: Callable[[str], int], eval_names: Collection[str]):
    """(rule, detail) of the first rule ``row`` breaks, or None."""
    for field in TEXT_FIELDS:
        value = row.get(field)
        if value is None or is_missing(value):
            return "null_field", f"{field} is missing"
        if not isinstance(value, str):
            return "wrong_type", f"{field} is {type(value).__name__}, not str"
        if not value.strip():
            return "empty_text", f"{field} is blank"
    if not row["answer"].isdigit() or needle(row["name"], row["answer"]) not in row["prompt"]:
        return "unverified_label", "the prompt's needle does not state this answer"
    tokens = count_tokens(row["prompt"])
    if not isinstance(row.get("length"), int) or tokens > row["length"]:
        return "length_out_of_bounds", f"{tokens} prompt tokens, length {row.get('length')}"
    if row["name"].lower() in eval_names:
        return "eval_contamination", f"name {row['name']} is asked about by an evaluation haystack"
    return None


def screen_haystacks(
    frame: pd.DataFrame, count_tokens: Callable[[str], int], eval_names: Collection[str], ledger: QuarantineLedger
) -> pd.DataFrame:
    """The rows of ``frame`` that keep every rule, validated by ``HaystackRow``; the others go to ``ledger``."""
    names = {name.lower() for name in eval_names}
    kept, seen, before = [], set(), ledger.count(TABLE)
    records = frame.to_dict("records")
    for record in records:
        length = record.get("length")
        whole = isinstance(length, numbers.Real) and not isinstance(length, bool) and float(length).is_integer()
        record["length"] = int(length) if whole else None
        problem = _problem(record, count_tokens, names)
        if problem is None and record["haystack_id"] in seen:
            problem = "duplicate_id", "an earlier row has this id"
        if problem is not None:
            ledger.add(TABLE, record.get("haystack_id"), problem[0], problem[1], record.get("prompt", ""))
            continue
        seen.add(record["haystack_id"])
        kept.append({**record, "prompt_tokens": count_tokens(record["prompt"]), "depth": float(record["depth"])})
    columns = list(HaystackRow.to_schema().columns)
    out = pd.DataFrame(kept, columns=columns).astype({"length": "int64", "prompt_tokens": "int64", "depth": "float64"})
    quarantined = ledger.count(TABLE) - before
    if len(records) != len(out) + quarantined:
        raise AssertionError(f"{TABLE}: rows_in {len(records)} != kept {len(out)} + quarantined {quarantined}")
    return HaystackRow.validate(out)
