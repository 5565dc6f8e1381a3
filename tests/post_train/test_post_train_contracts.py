"""The post-training stage screens its own SFT rows and preference pairs: the tables it builds pass their
contracts, broken rows are quarantined (and written), counts add up, and an emptied table stops the stage
before any evaluation or training."""

from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from configs import resolve
from data_contracts import IntakeResult, NoRowsLeft, QuarantineLedger, QuarantineRow
from lineage.contracts import contract_metrics
from training.objectives import build_preference_pairs
from training.post_train.contracts import (
    PAIRS_REMEDY,
    SFT_REMEDY,
    contract_counts,
    require_pairs,
    screen_pairs,
    screen_sft,
)
from training.post_train.phases import pair_table, sft_rows


class WordTokenizer:
    """One token per whitespace-separated word: token bounds in a test are countable by eye."""

    def encode(self, text, add_special_tokens=False):
        return SimpleNamespace(ids=text.split())


def candidates():
    return pd.DataFrame(
        {
            "prompt_id": ["p1", "p1", "p2", "p2"],
            "candidate_idx": [0, 1, 0, 1],
            "family": ["math", "math", "code", "code"],
            "difficulty": [1, 1, 2, 2],
            "prompt": ["Q: 1 + 1 = ?", "Q: 1 + 1 = ?", "Write f.", "Write f."],
            "response": ["Answer: 2", "Answer: 3", "def f(): pass\nAnswer: done", "Answer: f"],
            "style": ["short", "wrong", "verbose", "wrong"],
            "correct": [True, False, True, False],
            "n_chars": [9, 9, 26, 9],
        }
    )


def sft_table():
    frame = candidates()
    return frame[frame["correct"]].drop(columns="candidate_idx").reset_index(drop=True)


def config(**over):
    return resolve(overrides={"post_train.sft.seq_len": 16, "post_train.contracts.max_pair_tokens": 12, **over})


def test_shortest_correct_rows_are_sft_examples_that_pass_unchanged():
    # No candidate has a redundant tail to prune, so selection never calls an environment's verifier.
    rows, stats = sft_rows(candidates(), sft_table(), envs={}, tasks_by_id={}, mode="shortest_correct")
    assert rows["response"].tolist() == ["Answer: 2", "def f(): pass\nAnswer: done"]
    assert rows["correct"].tolist() == [True, True]
    assert stats["prompts_kept"] == 2.0
    result = screen_sft(rows, QuarantineLedger(), config(), WordTokenizer())
    pd.testing.assert_frame_equal(result.kept, rows)


def test_sft_rows_longer_than_a_packed_row_are_quarantined_and_counted():
    rows = sft_table()
    rows.loc[1, "response"] = " ".join(["word"] * 20)
    ledger = QuarantineLedger()
    result = screen_sft(rows, ledger, config(), WordTokenizer())
    assert result.kept["prompt_id"].tolist() == ["p1"]
    frame = ledger.frame()
    assert frame[["row_id", "table", "rule"]].values.tolist() == [["p2", "sft_rows", "length_out_of_bounds"]]
    assert "23 tokens > max 16" in frame.loc[0, "detail"]  # 2 prompt words + 20 response words + EOS
    assert contract_counts([result]) == {
        "sft_rows": {
            "rows_in": 2,
            "rows_kept": 1,
            "rows_quarantined": 1,
            "quarantined_by_rule": {"length_out_of_bounds": 1},
        }
    }


def test_all_sft_rows_quarantined_stops_with_what_to_do():
    rows = sft_table().assign(correct=False)
    with pytest.raises(NoRowsLeft, match="all 2 rows were quarantined \\(unverified_label=2\\)") as info:
        screen_sft(rows, QuarantineLedger(), config(), WordTokenizer())
    assert SFT_REMEDY in str(info.value)


def rollout(task, text, correct):
    return SimpleNamespace(task=task, text=text, correct=correct)


def step_pairs():
    """Real pairs from verified on-policy rows, as the preference phase builds them each step."""
    task = SimpleNamespace(task_id="p1", family="math", prompt="Q: 1 + 1 = ?")
    rolls = [rollout(task, "Answer: 2", True), rollout(task, "Answer: 3", False)]
    rows = [
        {"prompt_id": "p1", "text": r.text, "correct": r.correct, "format_ok": True, "length": len(r.text)}
        for r in rolls
    ]
    by_text = {(r.task.task_id, r.text): r for r in rolls}
    verified = {(r.task.task_id, r.text): r.correct for r in rolls}
    return build_preference_pairs(rows, max_pairs_per_prompt=1), by_text, verified


def test_phase_pairs_pass_their_contract():
    pairs, by_text, verified = step_pairs()
    table = pair_table(pairs, by_text, verified, step=3)
    result = screen_pairs(table, QuarantineLedger(), config(), WordTokenizer())
    pd.testing.assert_frame_equal(result.kept, table)
    assert result.kept[["pair_id", "chosen", "rejected", "chosen_verified"]].values.tolist() == [
        ["p1@3#0", "Answer: 2", "Answer: 3", True]
    ]


def test_a_pair_whose_chosen_side_failed_its_verifier_is_quarantined():
    pairs, by_text, verified = step_pairs()
    verified["p1", "Answer: 2"] = False
    ledger = QuarantineLedger()
    result = screen_pairs(pair_table(pairs, by_text, verified, step=1), ledger, config(), WordTokenizer())
    assert result.kept.empty
    assert ledger.counts("preference_pairs") == {"unverified_label": 1}


def test_phase_that_built_pairs_but_kept_none_stops():
    pairs, by_text, verified = step_pairs()
    ledger = QuarantineLedger()
    # The tiny bound stands for a policy whose pairs are all too long.
    cfg = config(**{"post_train.contracts.max_pair_tokens": 4})
    steps = [screen_pairs(pair_table(pairs, by_text, verified, step), ledger, cfg, WordTokenizer()) for step in (1, 2)]
    phase = IntakeResult.concat("preference_pairs", steps)
    assert (phase.rows_in, len(phase.kept), phase.quarantined_by_rule) == (2, 0, {"length_out_of_bounds": 2})
    with pytest.raises(NoRowsLeft, match="preference_pairs: all 2 rows") as info:
        require_pairs(phase)
    assert PAIRS_REMEDY in str(info.value)


def test_phase_whose_policy_built_no_pair_is_not_a_contract_breach():
    empty = screen_pairs(pair_table([], {}, {}, step=1), QuarantineLedger(), config(), WordTokenizer())
    require_pairs(IntakeResult.concat("preference_pairs", [empty]))


def test_counts_that_do_not_add_up_raise():
    broken = IntakeResult("sft_rows", 3, pd.DataFrame({"prompt_id": ["p1"]}), {"empty_text": 1})
    with pytest.raises(AssertionError, match="rows_in 3 != kept 1 \\+ quarantined 1"):
        contract_counts([broken])


def test_contract_metrics_are_flat_per_table_and_rule():
    counts = {
        "sft_rows": {"rows_in": 5, "rows_kept": 4, "rows_quarantined": 1, "quarantined_by_rule": {"empty_text": 1}}
    }
    assert contract_metrics(counts) == {
        "contracts.sft_rows.rows_in": 5.0,
        "contracts.sft_rows.rows_kept": 4.0,
        "contracts.sft_rows.rows_quarantined": 1.0,
        "contracts.sft_rows.quarantined.empty_text": 1.0,
    }


def test_stage_stops_before_training_and_writes_the_quarantine(tmp_path, monkeypatch):
    """Every SFT row is too long for a packed row: the stage raises before any evaluation or training, and
    quarantine.parquet says which rows and why."""
    import corpus.tokenizer
    import environments
    import evals.tasks
    import model
    from training.post_train.run import run_post_train

    curated = tmp_path / "curate"
    curated.mkdir()
    candidates().to_parquet(curated / "candidates.parquet")
    sft_table().to_parquet(curated / "sft.parquet")
    prompt_columns = ["prompt_id", "family", "difficulty", "prompt", "answer", "payload"]
    for name in ("rl_prompts", "sft_prompts"):
        pd.DataFrame(columns=prompt_columns).to_parquet(curated / f"{name}.parquet")
    monkeypatch.setattr(environments, "all_environments", lambda cfg: {})
    # Any module: the stage places it on the device before it screens (and never trains this one).
    monkeypatch.setattr(model, "load_checkpoint", lambda path, base: torch.nn.Linear(1, 1))
    monkeypatch.setattr(corpus.tokenizer, "load_tokenizer", lambda path: WordTokenizer())
    monkeypatch.setattr(evals.tasks, "eval_tasks", lambda curated, n: [])

    def no_eval(*args, **kwargs):
        raise AssertionError("evaluated although the SFT rows had already failed their contract")

    monkeypatch.setattr("training.post_train.run.evaluate", no_eval)
    out_dir = tmp_path / "post_train"
    cfg = config(**{"post_train.sft.seq_len": 4, "post_train.sft.data": "full"})
    with pytest.raises(NoRowsLeft, match="sft_rows: all 2 rows were quarantined \\(length_out_of_bounds=2\\)"):
        run_post_train(cfg, curated, tmp_path / "migrate", out_dir)
    quarantine = QuarantineRow.validate(pd.read_parquet(out_dir / "quarantine.parquet"))
    assert sorted(quarantine["row_id"]) == ["p1", "p2"]
    assert set(quarantine["rule"]) == {"length_out_of_bounds"}
