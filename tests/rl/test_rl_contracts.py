"""The rollout contract: each broken record is quarantined under its rule, the good ones become RolloutRow
rows, counts add up; and the stage trainer keeps broken records away from the update and its tables
across a resume."""

import math

import pandas as pd
import pytest

from data_contracts import QuarantineLedger
from data_contracts.rollouts import RolloutRow, screen_rollouts
from training.rl.records import RolloutRecord


def record(sample=0, **changes):
    good = RolloutRecord(
        prompt_index=3,
        sample=sample,
        task_id="code-1-0",
        family="code",
        prompt_ids=[5, 6],
        response_ids=[7, 8, 9, 10],
        response_mask=[1, 0, 1, 1],
        logprobs=[-0.5, 0.0, -1.0, -0.1],
        versions=[0, 0, 1, 1],
        text="x<result>y</result>z",
        finish_reason="eos",
        verdict={"correct": True, "format_ok": True, "extracted": None, "reason": ""},
        reward=1.0,
    )
    for key, value in changes.items():
        setattr(good, key, value)
    return good


BROKEN = {
    "shape_mismatch": [{"logprobs": [-0.5, 0.0, -1.0]}, {"response_mask": [1, 2, 1, 1]}, {"prompt_ids": []}],
    "non_finite_logprob": [{"logprobs": [-0.5, 0.0, math.nan, -0.1]}, {"logprobs": [0.5, 0.0, -1, -0.1]},
                           {"logprobs": [-0.5, -0.2, -1.0, -0.1]}],
    "version_not_monotone": [{"versions": [1, 1, 0, 1]}, {"versions": [0, 0, 1, 3]}, {"versions": [-1, 0, 0, 0]}],
    "reward_out_of_range": [{"reward": None}, {"reward": math.inf}, {"reward": 1.5}, {"reward": -0.3}],
}  # fmt: skip


@pytest.mark.parametrize("rule", sorted(BROKEN))
def test_each_rule_quarantines_its_records(rule):
    records = [record(sample=i, **change) for i, change in enumerate(BROKEN[rule])]
    records.append(record(sample=len(records)))
    ledger = QuarantineLedger()
    result = screen_rollouts(records, ledger, step=1, trained_version=2, reward_range=(-0.2, 1.0))
    assert result.quarantined_by_rule == {rule: len(BROKEN[rule])}
    assert result.rows_in == len(result.kept) + result.rows_quarantined == len(records)
    assert list(result.kept["rollout_id"]) == [records[-1].rollout_id]
    assert set(ledger.frame()["rule"]) == {rule}


def test_kept_rows_follow_the_model_and_ids_stay_unique_across_steps():
    ledger, seen = QuarantineLedger(), set()
    first = screen_rollouts(
        [record(0), record(1)], ledger, step=1, trained_version=1, reward_range=(0, 1), seen_ids=seen
    )
    again = screen_rollouts([record(1)], ledger, step=2, trained_version=2, reward_range=(0, 1), seen_ids=seen)
    assert len(first.kept) == 2 and again.quarantined_by_rule == {"duplicate_id": 1}
    row = RolloutRow.validate(first.kept).iloc[0]
    assert (row.model_tokens, row.observation_tokens, row.segments, row.min_version, row.max_version) == (3, 1, 2, 0, 1)
    assert row.logprob_mean == pytest.approx(-1.6 / 3)
    with pytest.raises(Exception, match="versions_ordered"):
        RolloutRow.validate(first.kept.assign(trained_version=0))


def test_the_stage_trainer_trains_only_on_kept_records_and_resumes_its_tables():
    import torch

    from training.rl.contracted import ContractedTrainer
    from training.rl.records import RolloutGroup
    from training.rl.scheduler import SchedulerConfig
    from training.rl.toy import toy_scheduler

    scheduler = toy_scheduler(SchedulerConfig(batch_groups=1, samples_per_prompt=2, max_new_tokens=8))
    scheduler.envs.shutdown()
    inner = scheduler.trainer
    dtypes = {k: v.dtype for k, v in inner.policy_state().items()}
    trainer = ContractedTrainer(inner, reward_range=(0.0, 1.25), engine_dtypes=dtypes)
    toy = [record(0, prompt_ids=[1, 3], response_ids=[2, 3], response_mask=[1, 1], logprobs=[-1.0, -2.0],
                  versions=[0, 0], text="ab", family="code", reward=r) for r in (0.0, 1.0)]  # fmt: skip
    toy[1].sample = 1
    broken = record(2, reward=7.0, prompt_ids=[1, 3], versions=[0, 0, 0, 0])
    stats = trainer.train_step([RolloutGroup(3, None, [*toy, broken], admitted_version=0)], version=0)
    assert stats["rollouts_kept"] == 2 and stats["rollouts_quarantined"] == 1 and stats["updated"] == 1.0
    assert len(trainer.tokens.frame()) == 4  # the two kept rows' model tokens only
    fresh = toy_scheduler(SchedulerConfig())
    fresh.envs.shutdown()
    restored = ContractedTrainer(fresh.trainer, reward_range=(0, 1.25), engine_dtypes=dtypes)
    restored.load_state(trainer.state())
    pd.testing.assert_frame_equal(restored.rollouts().kept, trainer.rollouts().kept)
    pd.testing.assert_frame_equal(restored.tokens.frame(), trainer.tokens.frame())
    assert restored.ledger.counts() == {"reward_out_of_range": 1}
    assert all(torch.equal(restored.policy_state()[k], v) for k, v in trainer.policy_state().items())
