"""The comparison and retrieval table contracts: a passing fixture, cases that must fail, and a property
test over random scored rollouts."""

import numpy as np
import pandas as pd
import pandera.errors
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_contracts.evaluation import ComparisonRow, RetrievalRow
from evals.compare import metric_rows

TOOL_FAMILIES = ("search", "tool_use", "workflow")


def scored(rows: list[tuple[str, str, bool, bool, int, int]]) -> pd.DataFrame:
    """Scored rollouts as the harness writes them: (prompt_id, family, correct, format_ok, tokens, tool_calls)."""
    return pd.DataFrame(rows, columns=["prompt_id", "family", "correct", "format_ok", "tokens", "tool_calls"])


GREEDY = scored([
    ("m0", "math", True, True, 10, 0), ("m1", "math", False, True, 30, 0),
    ("t0", "tool_use", False, False, 50, 1), ("s0", "search", True, True, 40, 2),
])  # fmt: skip
SAMPLED = scored([
    ("m0", "math", True, True, 10, 0), ("m0", "math", False, True, 12, 0),
    ("m1", "math", False, True, 30, 0), ("m1", "math", False, True, 31, 0),
    ("t0", "tool_use", True, True, 20, 1), ("t0", "tool_use", False, True, 22, 1),
    ("s0", "search", True, True, 40, 2), ("s0", "search", True, True, 44, 2),
])  # fmt: skip


@pytest.fixture
def valid() -> pd.DataFrame:
    rows = metric_rows("sft", GREEDY, SAMPLED, pass_k=(1, 2), tool_families=TOOL_FAMILIES)
    rows.append({"checkpoint": "sft", "family": "all", "metric": "heldout_loss", "value": 2.5, "n": 8})
    rows.append({"checkpoint": "sft", "family": "all", "metric": "mismatch.kl", "value": 0.01, "n": 0})
    return pd.DataFrame(rows)


def value(frame: pd.DataFrame, family: str, metric: str) -> float:
    return float(frame.set_index(["family", "metric"]).loc[(family, metric), "value"])


def test_passing_fixture_and_its_numbers(valid):
    ComparisonRow.validate(valid)
    assert value(valid, "math", "accuracy") == 0.5
    assert value(valid, "math", "tokens_per_correct") == 10.0
    assert np.isnan(value(valid, "tool_use", "tokens_per_correct"))
    assert value(valid, "math", "pass@1") == pytest.approx(0.25)  # (1/2 + 0/2) / 2
    assert value(valid, "math", "pass@2") == pytest.approx(0.5)
    assert value(valid, "all", "pass@2") == pytest.approx(3 / 4)
    assert value(valid, "agentic", "agentic_success") == 0.5
    assert value(valid, "agentic", "tool_calls_per_success") == 2.0
    assert value(valid, "agentic", "tool_calls_per_episode") == 1.5
    assert "tool_calls_per_episode" not in set(valid.loc[valid["family"] == "math", "metric"])


def _break(frame: pd.DataFrame, at: tuple[str, str], changes: dict) -> pd.DataFrame:
    """``frame`` with ``changes`` (column -> value) written into the row at (family, metric)."""
    frame = frame.copy()
    where = (frame["family"] == at[0]) & (frame["metric"] == at[1])
    for column, new in changes.items():
        frame.loc[where, column] = new
    return frame


@pytest.mark.parametrize(
    ("family", "metric", "changes", "rule"),
    [
        ("math", "accuracy", {"value": 1.5}, "rates_in_unit_interval"),
        ("math", "pass@2", {"value": 0.1}, "pass_at_k_nondecreasing_in_k"),
        ("math", "tokens_per_answer", {"value": -1.0}, "counts_nonnegative"),
        ("math", "accuracy", {"value": np.nan}, "null_only_without_successes"),
        ("math", "tokens_per_correct", {"n": 0}, "null_only_without_successes"),
        ("math", "accuracy", {"metric": "acuracy"}, "known_metric"),
        ("math", "accuracy", {"family": "poetry"}, "isin"),
        ("math", "accuracy", {"metric": "format_rate"}, "unique_checkpoint_family_metric"),
        ("all", "heldout_loss", {"value": np.inf}, "finite_values"),
    ],
)
def test_broken_tables_fail_naming_the_rule(valid, family, metric, changes, rule):
    with pytest.raises(pandera.errors.SchemaError, match=rule):
        ComparisonRow.validate(_break(valid, (family, metric), changes))


def test_an_extra_column_fails(valid):
    with pytest.raises(
        (pandera.errors.SchemaError, pandera.errors.SchemaErrors), match="'note' not in DataFrameSchema"
    ):
        ComparisonRow.validate(valid.assign(note="x"))


scored_rows = st.lists(
    st.tuples(
        st.sampled_from(["p0", "p1", "p2", "p3"]),
        st.booleans(),
        st.booleans(),
        st.integers(0, 500),
        st.integers(0, 4),
    ),
    min_size=1,
    max_size=12,
)


@settings(max_examples=40, deadline=None)
@given(rows=scored_rows, samples=st.integers(1, 4), data=st.data())
def test_any_scored_rollouts_make_a_valid_table(rows, samples, data):
    """Random greedy verdicts, and ``samples`` random verdicts per prompt: the table always validates, and
    pass@1 is the mean share of correct samples."""
    family = {p: f for p, f in zip(["p0", "p1", "p2", "p3"], ["math", "search", "math", "workflow"], strict=True)}
    greedy = scored([(p, family[p], c and f, f, t, k) for p, c, f, t, k in rows]).drop_duplicates("prompt_id")
    prompts = list(greedy["prompt_id"])
    verdicts = data.draw(st.lists(st.booleans(), min_size=len(prompts) * samples, max_size=len(prompts) * samples))
    sampled = scored(
        [(p, family[p], verdicts[i * samples + j], True, 1, 0) for i, p in enumerate(prompts) for j in range(samples)]
    )
    ks = tuple(range(1, samples + 1))
    table = ComparisonRow.validate(
        pd.DataFrame(metric_rows("ckpt", greedy, sampled, pass_k=ks, tool_families=TOOL_FAMILIES))
    )
    assert value(table, "all", "pass@1") == pytest.approx(np.mean(verdicts))
    assert value(table, "all", "accuracy") == pytest.approx(greedy["correct"].mean())
    assert value(table, "all", f"pass@{samples}") == pytest.approx(
        np.mean([any(verdicts[i * samples : (i + 1) * samples]) for i in range(len(prompts))])
    )


def retrieval_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "checkpoint": ["base"] * 2,
            "length": [64, 256],
            "depth": [0.5, 0.5],
            "n": [4, 4],
            "correct": [3, 0],
            "accuracy": [0.75, 0.0],
            "prompt_tokens": [63.0, 250.5],
            "beyond_context": [False, True],
        }
    )


def test_retrieval_contract_passes_and_fails():
    RetrievalRow.validate(retrieval_frame())
    broken = {
        "correct_at_most_n": {"correct": [5, 0]},
        "accuracy_is_correct_over_n": {"accuracy": [0.5, 0.0]},
        "prompt_fits_length": {"prompt_tokens": [65.0, 250.5]},
        "unique_checkpoint_length_depth": {"length": [64, 64]},
    }
    for rule, changes in broken.items():
        with pytest.raises(pandera.errors.SchemaError, match=rule):
            RetrievalRow.validate(retrieval_frame().assign(**changes))
