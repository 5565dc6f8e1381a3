"""Every schema: a passing fixture, a property test over generated valid rows, and cases that must fail."""

import json

import pandas as pd
import pandera.errors as pe
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_contracts import (
    CandidateResponse,
    EvalResult,
    PreferencePair,
    PretrainDocument,
    PromptRow,
    QuarantineRow,
    SFTExample,
)

FAMILIES = ["math", "code", "search", "tool_use", "workflow"]
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40).filter(str.strip)


def docs(**over):
    base = {
        "doc_id": ["a", "b"],
        "source": ["s", "s"],
        "text": ["hello", "world!"],
        "n_chars": [5, 6],
        "split": ["train", "heldout"],
    }
    return pd.DataFrame({**base, **over})


def prompts(**over):
    base = {
        "prompt_id": ["p1", "p2"],
        "family": ["math", "code"],
        "difficulty": [1, 3],
        "prompt": ["Q: 1+1=?\n", "x"],
        "answer": ["2", "def f(x): return x"],
        "payload": ["{}", '{"tests": []}'],
    }
    return pd.DataFrame({**base, **over})


def sft(**over):
    base = {
        "prompt_id": ["p1"],
        "family": ["math"],
        "difficulty": [1],
        "prompt": ["Q: 1+1=?\n"],
        "response": ["Answer: 2"],
        "style": ["short"],
        "correct": [True],
        "n_chars": [9],
    }
    return pd.DataFrame({**base, **over})


def candidates(**over):
    base = {
        "prompt_id": ["p1", "p1"],
        "candidate_idx": [0, 1],
        "family": ["math", "math"],
        "difficulty": [1, 1],
        "prompt": ["Q\n", "Q\n"],
        "response": ["Answer: 2", "Answer: 3"],
        "style": ["short", "wrong"],
        "correct": [True, False],
        "n_chars": [9, 9],
    }
    return pd.DataFrame({**base, **over})


def pairs(**over):
    base = {
        "pair_id": ["x"],
        "prompt_id": ["p1"],
        "family": ["math"],
        "prompt": ["Q\n"],
        "chosen": ["Answer: 2"],
        "rejected": ["Answer: 3"],
        "chosen_reward": [1.0],
        "rejected_reward": [-0.5],
        "chosen_verified": [True],
    }
    return pd.DataFrame({**base, **over})


def quarantine(**over):
    base = {"row_id": ["r"], "table": ["t"], "rule": ["oversize"], "detail": ["d"], "excerpt": ["e"]}
    return pd.DataFrame({**base, **over})


def evals(**over):
    base = {
        "checkpoint": ["c"],
        "family": ["all"],
        "n": [10],
        "accuracy": [0.5],
        "format_rate": [1.0],
        "mean_tokens": [12.0],
        "mean_tokens_correct": [10.0],
    }
    return pd.DataFrame({**base, **over})


PASSING = [
    (PretrainDocument, docs),
    (PromptRow, prompts),
    (SFTExample, sft),
    (CandidateResponse, candidates),
    (PreferencePair, pairs),
    (QuarantineRow, quarantine),
    (EvalResult, evals),
]


@pytest.mark.parametrize("schema, make", PASSING, ids=lambda x: getattr(x, "__name__", ""))
def test_passing_fixture(schema, make):
    frame = make()
    assert schema.validate(frame).equals(frame)


@pytest.mark.parametrize(
    "schema, frame, rule",
    [
        (PretrainDocument, docs(doc_id=["a", "a"]), "unique"),
        (PretrainDocument, docs(text=["  ", "x"], n_chars=[2, 1]), "not_blank"),
        (PretrainDocument, docs(text=pd.Series(["ok\udcff", "world!"], dtype=object), n_chars=[3, 6]), "valid_utf8"),
        (PretrainDocument, docs(n_chars=[1, 6]), "n_chars_matches_text"),
        (PretrainDocument, docs(split=["train", "dev"]), "isin"),
        (PretrainDocument, docs(extra=[1, 2]), "column_not_in_schema"),
        (PromptRow, prompts(family=["math", "poetry"]), "isin"),
        (PromptRow, prompts(difficulty=[0, 3]), "greater_than_or_equal_to"),
        (PromptRow, prompts(payload=["{}", "not json"]), "payload_is_json_object"),
        (SFTExample, sft(correct=[False]), "isin"),
        (SFTExample, sft(style=["wrong"]), "isin"),
        (SFTExample, sft(response=["x" * 5000]), "str_length"),
        (CandidateResponse, candidates(candidate_idx=[0, 0]), "unique_prompt_candidate"),
        (CandidateResponse, candidates(correct=[True, True]), "wrong_style_is_incorrect"),
        (PreferencePair, pairs(rejected=["Answer: 2"]), "chosen_differs_from_rejected"),
        (PreferencePair, pairs(chosen_reward=[-1.0]), "chosen_reward_above_rejected"),
        (PreferencePair, pairs(chosen_verified=[False]), "isin"),
        (QuarantineRow, quarantine(rule=["because"]), "isin"),
        (EvalResult, evals(accuracy=[1.5]), "less_than_or_equal_to"),
        (PromptRow, prompts(prompt=[None, "x"]), "not_nullable"),
    ],
)
def test_failing_case_names_the_rule(schema, frame, rule):
    with pytest.raises(pe.SchemaErrors) as info:
        schema.validate(frame, lazy=True)
    assert rule.upper() in str(info.value).upper()


@settings(max_examples=30, deadline=None)
@given(
    st.lists(st.tuples(text, st.sampled_from(["train", "heldout"])), min_size=1, max_size=8, unique_by=lambda t: t[0])
)
def test_pretrain_document_property(rows):
    frame = pd.DataFrame(
        {
            "doc_id": [f"d{i}" for i in range(len(rows))],
            "source": "s",
            "text": [t for t, _ in rows],
            "n_chars": [len(t) for t, _ in rows],
            "split": [s for _, s in rows],
        }
    )
    PretrainDocument.validate(frame)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(FAMILIES), st.integers(1, 5), text, text), min_size=1, max_size=8))
def test_prompt_row_property(rows):
    frame = pd.DataFrame(
        {
            "prompt_id": [f"p{i}" for i in range(len(rows))],
            "family": [r[0] for r in rows],
            "difficulty": [r[1] for r in rows],
            "prompt": [r[2] for r in rows],
            "answer": [r[3] for r in rows],
            "payload": [json.dumps({"i": i}) for i in range(len(rows))],
        }
    )
    PromptRow.validate(frame)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.tuples(text, st.booleans()), min_size=1, max_size=6))
def test_candidate_property(rows):
    frame = pd.DataFrame(
        {
            "prompt_id": "p",
            "candidate_idx": list(range(len(rows))),
            "family": "math",
            "difficulty": 1,
            "prompt": "Q\n",
            "response": [r[0] for r in rows],
            "style": ["short" if ok else "wrong" for _, ok in rows],
            "correct": [ok for _, ok in rows],
            "n_chars": [len(r[0]) for r in rows],
        }
    )
    CandidateResponse.validate(frame)
    if frame["correct"].any():
        SFTExample.validate(frame[frame["correct"]].drop(columns="candidate_idx").head(1))


@settings(max_examples=30, deadline=None)
@given(text, text, st.floats(-1, 1), st.floats(0.01, 2))
def test_preference_pair_property(chosen, rejected, low, margin):
    if chosen == rejected:
        rejected = rejected + "!"
    PreferencePair.validate(
        pairs(chosen=[chosen], rejected=[rejected], rejected_reward=[low], chosen_reward=[low + margin])
    )


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from([*FAMILIES, "all"]), st.integers(1, 1000), st.floats(0, 1)), min_size=1, max_size=6
    )
)
def test_eval_result_property(rows):
    EvalResult.validate(
        pd.DataFrame(
            {
                "checkpoint": "c",
                "family": [r[0] for r in rows],
                "n": [r[1] for r in rows],
                "accuracy": [r[2] for r in rows],
                "format_rate": [r[2] for r in rows],
                "mean_tokens": [10.0] * len(rows),
                "mean_tokens_correct": [float("nan")] * len(rows),
            }
        )
    )
