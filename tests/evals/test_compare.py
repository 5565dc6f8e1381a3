"""The checkpoint comparison: the pass@k estimator by hand and against enumeration, and every checkpoint of a
run measured the same way — a memorised checkpoint scores what it memorised, a noised copy of it less."""

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_contracts.evaluation import ComparisonRow, RetrievalRow
from evals.compare import compare_checkpoints, comparison_plots, evaluate_checkpoint, load_engine, pass_at_k


@pytest.mark.parametrize(
    ("n", "c", "k", "expected"),
    [(5, 2, 1, 0.4), (5, 2, 2, 1 - 3 / 10), (5, 2, 3, 1 - 1 / 10), (5, 2, 4, 1.0), (5, 0, 3, 0.0), (4, 4, 1, 1.0),
     (10, 3, 5, 1 - math.comb(7, 5) / math.comb(10, 5))],
)  # fmt: skip
def test_pass_at_k_by_hand(n, c, k, expected):
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("n", "c", "k"), [(3, 4, 1), (3, 1, 0), (3, 1, 4), (0, 0, 1)])
def test_pass_at_k_refuses_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="pass@k needs"):
        pass_at_k(n, c, k)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 8).flatmap(lambda n: st.tuples(st.just(n), st.integers(0, n), st.integers(1, n))))
def test_pass_at_k_equals_the_share_of_k_subsets_holding_a_correct_sample(nck):
    n, c, k = nck
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(samples, k))
    assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets), abs=1e-12)


def metric(table: pd.DataFrame, checkpoint: str, family: str, name: str) -> float:
    row = table[(table["checkpoint"] == checkpoint) & (table["family"] == family) & (table["metric"] == name)]
    assert len(row) == 1, (checkpoint, family, name)
    return float(row["value"].iloc[0])


def test_memorised_checkpoint_scores_what_it_memorised(world, comparison):
    table = comparison.table
    ComparisonRow.validate(table)
    for family in (*{t.family for t in world.tasks}, "all"):
        assert metric(table, "memorised", family, "accuracy") == 1.0, family
        assert metric(table, "memorised", family, "format_rate") == 1.0, family
        # Every answer is correct, so tokens per answer and per correct answer are the same mean.
        assert metric(table, "memorised", family, "tokens_per_correct") == metric(
            table, "memorised", family, "tokens_per_answer"
        )
    tool_tasks = [t for t in world.tasks if world.envs[t.family].tool_names]
    calls = [world.references[t.task_id].count("</call>") for t in tool_tasks]
    assert metric(table, "memorised", "agentic", "agentic_success") == 1.0
    assert metric(table, "memorised", "agentic", "tool_calls_per_success") == pytest.approx(np.mean(calls))
    assert metric(table, "memorised", "workflow", "tool_calls_per_episode") == 2.0


def test_noise_costs_accuracy_and_heldout_loss(comparison):
    table = comparison.table
    assert metric(table, "noisy", "all", "accuracy") < metric(table, "memorised", "all", "accuracy")
    assert metric(table, "noisy", "all", "heldout_loss") > metric(table, "memorised", "all", "heldout_loss") + 0.3
    rows = table[table["metric"].str.startswith("mismatch.")]
    assert set(rows["checkpoint"]) == {"noisy"} and set(rows["metric"]) == {"mismatch.kl", "mismatch.tis_clip_fraction"}


def test_every_checkpoint_gets_the_same_rows(comparison):
    keys = {name: set(zip(g["family"], g["metric"], strict=True)) for name, g in comparison.table.groupby("checkpoint")}
    mismatch = {("all", "mismatch.kl"), ("all", "mismatch.tis_clip_fraction")}
    assert keys["noisy"] - mismatch == keys["memorised"]
    assert {"pass@1", "pass@2", "heldout_loss"} <= {m for _, m in keys["memorised"]}
    assert comparison.rollouts.groupby("checkpoint").size().to_dict() == {"memorised": 10, "noisy": 10}


def test_retrieval_grid_is_reported_with_lengths_past_the_trained_context(comparison, eval_cfg):
    retrieval = RetrievalRow.validate(comparison.retrieval)
    grid = eval_cfg.retrieval
    assert len(retrieval) == 2 * len(grid.lengths) * len(grid.depths)
    assert set(retrieval.loc[retrieval["beyond_context"], "length"]) == {192}


def test_sampling_is_seeded_the_same_for_every_run(world, eval_cfg):
    engine = load_engine(world.checkpoint, base=world.model_cfg)
    first = evaluate_checkpoint(engine, world.envs, world.tasks[:4], eval_cfg, checkpoint="a")
    again = evaluate_checkpoint(engine, world.envs, world.tasks[:4], eval_cfg, checkpoint="a")
    pd.testing.assert_frame_equal(pd.DataFrame(first.rows), pd.DataFrame(again.rows))


def test_plots_show_every_checkpoint(comparison):
    figures = comparison_plots(comparison.table, comparison.retrieval)
    assert set(figures) == {"accuracy_by_family", "tokens_per_correct", "retrieval_by_length", "retrieval_by_depth"}
    bars = figures["accuracy_by_family"].axes[0]
    assert [t.get_text() for t in bars.get_legend().get_texts()] == ["memorised", "noisy"]
    assert len(bars.patches) == 2 * 6  # two checkpoints x (five families + "all")


def test_a_mismatch_summary_for_an_unknown_checkpoint_is_refused(world, eval_cfg):
    with pytest.raises(ValueError, match="not among the checkpoints"):
        compare_checkpoints({"a": world.checkpoint}, world.envs, world.tasks, eval_cfg, mismatch={"rl": {"kl": 0.1}})


def test_a_folder_without_tokenizer_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"lacks tokenizer\.json, tokenizer_config\.json"):
        load_engine(tmp_path)
