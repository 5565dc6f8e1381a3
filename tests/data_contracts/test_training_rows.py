"""The post-training row rules: each bad row is quarantined under its rule, good rows pass unchanged,
counts add up, and an emptied table raises instead of training on nothing."""

import math

import pandas as pd
import pandera.errors as pe
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_contracts import (
    IntakeResult,
    NoRowsLeft,
    QuarantineLedger,
    QuarantineRow,
    require_kept,
    screen_preference_pairs,
    screen_sft_rows,
)

MAX_CHARS, MAX_TOKENS = 40, 12


def words(text: str) -> int:
    return len(text.split())


def sft_row(prompt_id="p0", **over):
    row = {
        "prompt_id": prompt_id,
        "family": "math",
        "difficulty": 1,
        "prompt": "Q: 1 + 1 = ?",
        "response": "Answer: 2",
        "style": "short",
        "correct": True,
        "n_chars": 9,
    }
    return {**row, **over}


def pair_row(pair_id="x0", **over):
    row = {
        "pair_id": pair_id,
        "prompt_id": "p0",
        "family": "math",
        "prompt": "Q: 1 + 1 = ?",
        "chosen": "Answer: 2",
        "rejected": "Answer: 3",
        "chosen_reward": 1.0,
        "rejected_reward": -0.5,
        "chosen_verified": True,
    }
    return {**row, **over}


def screen_sft(rows, ledger=None):
    return screen_sft_rows(
        pd.DataFrame(rows),
        QuarantineLedger() if ledger is None else ledger,
        max_response_chars=MAX_CHARS,
        max_tokens=MAX_TOKENS,
        count_tokens=words,
    )


def screen_pairs(rows, ledger=None):
    return screen_preference_pairs(
        pd.DataFrame(rows),
        QuarantineLedger() if ledger is None else ledger,
        max_response_chars=MAX_CHARS,
        max_tokens=MAX_TOKENS,
        count_tokens=words,
    )


BAD_SFT = [
    (sft_row("empty", response=""), "empty_text"),
    (sft_row("blank-prompt", prompt=" \n "), "empty_text"),
    (sft_row("nan-response", response=math.nan), "null_field"),
    (sft_row("int-response", response=42), "wrong_type"),
    (sft_row("surrogate", response="caf\udce9"), "invalid_utf8"),
    (sft_row("false-label", correct=False), "unverified_label"),
    (sft_row("missing-label", correct=None), "unverified_label"),
    (sft_row("string-label", correct="yes"), "wrong_type"),
    (sft_row("long-chars", response="x" * (MAX_CHARS + 1)), "length_out_of_bounds"),
    # 6 prompt words + 6 response words + EOS = 13 tokens, one more than a packed row holds.
    (sft_row("long-tokens", response="a b c d e f"), "length_out_of_bounds"),
    (sft_row("p0", response="Answer: 2, again"), "duplicate_id"),
    (sft_row(math.nan), "null_field"),
    (sft_row(7), "wrong_type"),
]

BAD_PAIRS = [
    (pair_row("same", rejected="Answer: 2"), "chosen_equals_rejected"),
    (pair_row("empty-chosen", chosen=""), "empty_text"),
    (pair_row("nan-rejected", rejected=math.nan), "null_field"),
    (pair_row("false-label", chosen_verified=False), "unverified_label"),
    (pair_row("missing-label", chosen_verified=math.nan), "unverified_label"),
    (pair_row("nan-reward", chosen_reward=math.nan), "null_field"),
    (pair_row("string-reward", rejected_reward="low"), "wrong_type"),
    (pair_row("no-margin", chosen_reward=-0.5), "reward_margin_not_positive"),
    (pair_row("long-rejected", rejected="y" * (MAX_CHARS + 1)), "length_out_of_bounds"),
    # 6 prompt words + 7 rejected words = 13 tokens (no EOS is added to a pair's sides).
    (pair_row("long-tokens", rejected="a b c d e f g"), "length_out_of_bounds"),
    (pair_row("x0", rejected="Answer: 4"), "duplicate_id"),
    (pair_row(None), "null_field"),
]


def test_good_sft_rows_pass_through_unchanged():
    frame = pd.DataFrame([sft_row("p0"), sft_row("p1", family="code", difficulty=3, style="cot")])
    ledger = QuarantineLedger()
    result = screen_sft_rows(frame, ledger, max_response_chars=MAX_CHARS, max_tokens=MAX_TOKENS, count_tokens=words)
    pd.testing.assert_frame_equal(result.kept, frame)
    assert (result.rows_in, result.rows_quarantined, len(ledger.frame())) == (2, 0, 0)


def test_good_pairs_pass_through_unchanged():
    frame = pd.DataFrame([pair_row("x0"), pair_row("x1", prompt_id="p1", chosen="Answer: 5")])
    result = screen_preference_pairs(
        frame, QuarantineLedger(), max_response_chars=MAX_CHARS, max_tokens=MAX_TOKENS, count_tokens=words
    )
    pd.testing.assert_frame_equal(result.kept, frame)
    assert result.rows_quarantined == 0


def test_bounds_are_inclusive():
    # 6 prompt words + 5 response words + EOS = 12 tokens: exactly one packed row.
    at_bounds = [sft_row("tokens", response="a b c d e"), sft_row("chars", response="x" * MAX_CHARS)]
    assert screen_sft(at_bounds).kept["prompt_id"].tolist() == ["tokens", "chars"]


@pytest.mark.parametrize(
    "screen, good, bad, table",
    [(screen_sft, sft_row("p0"), BAD_SFT, "sft_rows"), (screen_pairs, pair_row("x0"), BAD_PAIRS, "preference_pairs")],
    ids=["sft_rows", "preference_pairs"],
)
def test_each_bad_row_is_quarantined_with_its_rule(screen, good, bad, table):
    ledger = QuarantineLedger()
    result = screen([good] + [row for row, _ in bad], ledger)
    assert len(result.kept) == 1
    assert result.kept.iloc[0].to_dict() == good
    frame = ledger.frame()
    assert frame["rule"].tolist() == [rule for _, rule in bad]
    assert set(frame["table"]) == {table}
    assert result.rows_in == len(bad) + 1 == len(result.kept) + result.rows_quarantined
    assert result.quarantined_by_rule == ledger.counts(table)
    # A row without a usable id is named by its position, so a reviewer can still find it.
    assert frame["row_id"].iloc[-1] == f"#{len(bad)}"


def test_quarantine_names_the_rule_and_keeps_an_excerpt(tmp_path):
    ledger = QuarantineLedger()
    screen_sft([sft_row("false-label", correct=False, response="Answer: 3")], ledger)
    frame = ledger.frame()
    assert frame.loc[0, ["row_id", "rule"]].tolist() == ["false-label", "unverified_label"]
    assert "failed its verifier" in frame.loc[0, "detail"]
    assert frame.loc[0, "excerpt"] == "Answer: 3"
    # Same file format as the curation stage's quarantine: a valid QuarantineRow table that round-trips.
    frame.to_parquet(tmp_path / "quarantine.parquet", index=False)
    QuarantineRow.validate(pd.read_parquet(tmp_path / "quarantine.parquet"))


def test_first_valid_copy_of_an_id_is_kept_even_after_a_broken_one():
    result = screen_sft([sft_row("p0", response=""), sft_row("p0", response="Answer: 2")])
    assert result.kept["response"].tolist() == ["Answer: 2"]
    assert result.quarantined_by_rule == {"empty_text": 1}


def test_counts_are_per_call_on_a_shared_ledger():
    ledger = QuarantineLedger()
    first = screen_pairs([pair_row("a", chosen="")], ledger)
    second = screen_pairs([pair_row("b"), pair_row("c", rejected="Answer: 2")], ledger)
    assert first.quarantined_by_rule == {"empty_text": 1}
    assert second.quarantined_by_rule == {"chosen_equals_rejected": 1}
    both = IntakeResult.concat("preference_pairs", [first, second])
    assert (both.rows_in, len(both.kept), both.rows_quarantined) == (3, 1, 2)
    both.check_balance()
    assert ledger.count("preference_pairs") == 2


def test_inherited_columns_are_left_to_the_schema_and_raise():
    with pytest.raises(pe.SchemaError, match="family"):
        screen_sft([sft_row("p0", family="poetry")])


@pytest.mark.parametrize(
    "screen, rows, rules",
    [
        (screen_sft, [sft_row("a", response=""), sft_row("b", correct=False)], "empty_text=1, unverified_label=1"),
        (screen_pairs, [pair_row("a", rejected="Answer: 2")], "chosen_equals_rejected=1"),
    ],
)
def test_all_quarantined_raises_with_rules_and_remedy(screen, rows, rules):
    result = screen(rows)
    assert result.kept.empty and result.rows_quarantined == len(rows)
    with pytest.raises(NoRowsLeft, match=f"all {len(rows)} rows were quarantined \\({rules}\\).*raise the bound"):
        require_kept(result, remedy="raise the bound")


def test_empty_table_raises_and_a_kept_row_does_not():
    with pytest.raises(NoRowsLeft, match="sft_rows: no rows to train on"):
        require_kept(screen_sft([]), remedy="")
    require_kept(screen_sft([sft_row("p0")]), remedy="")


sft_values = {
    "prompt_id": st.sampled_from(["a", "b", "c", None, 3]),
    "prompt": st.one_of(st.text(max_size=20), st.none(), st.integers()),
    "response": st.one_of(st.text(max_size=60), st.just(math.nan)),
    "correct": st.one_of(st.booleans(), st.none(), st.just("yes")),
}


@settings(max_examples=25, deadline=None)
@given(st.lists(st.fixed_dictionaries(sft_values), max_size=8))
def test_sft_counts_always_add_up(values):
    ledger = QuarantineLedger()
    result = screen_sft([sft_row(**v) for v in values], ledger)
    assert result.rows_in == len(values) == len(result.kept) + result.rows_quarantined
    assert len(ledger.frame()) == result.rows_quarantined
    assert result.kept["prompt_id"].is_unique
    assert result.kept["correct"].all()
