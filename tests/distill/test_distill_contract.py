"""The teacher-samples contract: a passing fixture, one case per rule that must be quarantined, a property
test (whatever is corrupted, the counts balance and only good rows are kept), and a parquet round trip."""

import math

import numpy as np
import pandas as pd
import pandera.errors
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_contracts import QuarantineLedger, TeacherSample, screen_teacher_samples
from data_contracts.teacher_logprobs import TEACHER_DTYPES

K, VOCAB, MAX_TOKENS = 3, 50, 40


def good_row(i: int, *, response: int = 4) -> dict:
    """A valid sample: R response tokens, the last one an observation; top-3 log-probs log(0.5, 0.3, 0.1)."""
    logp = [math.log(0.5), math.log(0.3), math.log(0.1)]
    return {
        "sample_id": f"s{i}",
        "prompt_id": f"p{i}",
        "family": "math",
        "teacher": "post_train",
        "prompt_ids": [1, 2, 3],
        "response_ids": list(range(10, 10 + response)),
        "response_mask": [1] * (response - 1) + [0],
        "topk_ids": [t for r in range(response) for t in (r, r + 1, r + 2)],
        "topk_logprobs": logp * response,
        "k": K,
        "correct": True,
        "n_tokens": response - 1,
    }


def screen(rows):
    ledger = QuarantineLedger()
    result = screen_teacher_samples(pd.DataFrame(rows), ledger, top_k=K, vocab_size=VOCAB, max_tokens=MAX_TOKENS)
    return result, ledger


def broken(field: str, value) -> dict:
    return {**good_row(99), field: value}


def test_valid_rows_pass_and_validate():
    result, ledger = screen([good_row(i) for i in range(3)])
    assert len(result.kept) == 3 and result.rows_quarantined == 0
    assert ledger.frame().empty
    TeacherSample.validate(result.kept)


@pytest.mark.parametrize(
    ("row", "rule"),
    [
        (broken("sample_id", None), "null_field"),
        (broken("sample_id", 7), "wrong_type"),
        (broken("correct", False), "unverified_label"),
        (broken("correct", None), "unverified_label"),
        (broken("correct", "yes"), "wrong_type"),
        (broken("response_ids", "10 11 12 13"), "wrong_type"),
        (broken("topk_ids", [0.5] * 12), "wrong_type"),
        (broken("topk_logprobs", None), "null_field"),
        (broken("k", 4), "top_k_mismatch"),
        (broken("k", True), "top_k_mismatch"),
        (broken("response_mask", [1, 1, 1]), "shape_mismatch"),
        (broken("topk_ids", list(range(11))), "shape_mismatch"),
        (broken("topk_logprobs", [-1.0] * 11), "shape_mismatch"),
        (broken("n_tokens", 4), "shape_mismatch"),
        (broken("response_ids", []), "shape_mismatch"),
        (broken("topk_logprobs", [-1.0] * 11 + [math.nan]), "non_finite_logprob"),
        (broken("topk_logprobs", [-math.inf] * 12), "non_finite_logprob"),
        (broken("topk_ids", [0, 1, VOCAB] * 4), "invalid_topk"),
        (broken("topk_ids", [0, 0, 1] * 4), "invalid_topk"),
        (broken("topk_logprobs", [0.1, -1.0, -2.0] * 4), "invalid_topk"),
        (broken("topk_logprobs", [math.log(0.6), math.log(0.3), math.log(0.2)] * 4), "invalid_topk"),
        (broken("prompt_ids", list(range(MAX_TOKENS))), "length_out_of_bounds"),
    ],
)
def test_each_rule_quarantines_the_row_and_counts_it(row, rule):
    result, ledger = screen([good_row(0), row])
    assert len(result.kept) == 1 and result.kept["sample_id"].tolist() == ["s0"]
    assert result.quarantined_by_rule == {rule: 1}
    frame = ledger.frame()
    assert frame["rule"].tolist() == [rule] and frame["table"].tolist() == ["teacher_samples"]


def test_a_duplicate_keeps_the_first_valid_copy_and_a_broken_copy_never_shadows_it():
    first_broken = {**good_row(0), "k": 5}
    result, _ = screen([first_broken, good_row(0), good_row(0)])
    assert result.quarantined_by_rule == {"top_k_mismatch": 1, "duplicate_id": 1}
    assert len(result.kept) == 1


def test_the_pandera_model_refuses_inconsistent_rows_it_is_handed_directly():
    frame = pd.DataFrame([good_row(0), {**good_row(1), "k": 2}]).astype(TEACHER_DTYPES)
    with pytest.raises(pandera.errors.SchemaError):
        TeacherSample.validate(frame)
    frame = pd.DataFrame([{**good_row(0), "topk_logprobs": [math.nan] * 12}]).astype(TEACHER_DTYPES)
    with pytest.raises(pandera.errors.SchemaError):
        TeacherSample.validate(frame)


def test_kept_rows_survive_a_parquet_round_trip(tmp_path):
    result, _ = screen([good_row(i) for i in range(2)])
    result.kept.to_parquet(tmp_path / "t.parquet", index=False)
    back = pd.read_parquet(tmp_path / "t.parquet")
    # Parquet hands lists back as numpy arrays: the contract takes those too.
    again, _ = screen(back.to_dict("records"))
    assert len(again.kept) == 2 and again.rows_quarantined == 0
    assert isinstance(back["topk_ids"].iloc[0], np.ndarray)


CORRUPTIONS = {
    "correct": False,
    "k": K + 1,
    "response_mask": [1],
    "topk_logprobs": [math.nan] * (4 * K),
    "topk_ids": [0] * (4 * K),
}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([None, *CORRUPTIONS]), min_size=1, max_size=12))
def test_counts_balance_and_only_uncorrupted_rows_are_kept(plan):
    rows = [good_row(i) if c is None else {**good_row(i), c: CORRUPTIONS[c]} for i, c in enumerate(plan)]
    result, ledger = screen(rows)
    assert result.rows_in == len(rows) == len(result.kept) + result.rows_quarantined
    assert sorted(result.kept["sample_id"]) == sorted(f"s{i}" for i, c in enumerate(plan) if c is None)
    assert ledger.count("teacher_samples") == sum(c is not None for c in plan)
