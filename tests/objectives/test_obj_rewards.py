"""Evo-CoT rewards: the length term never pays a wrong answer for brevity, and each penalty fires where it should."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from training.objectives.rewards import (
    EvoCoTConfig,
    ScoredResponse,
    compression_ratio,
    evo_cot_rewards,
    length_position,
    length_reward,
)

GROUPS = st.lists(st.tuples(st.integers(0, 4096), st.booleans()), min_size=1, max_size=16)


@settings(max_examples=200, deadline=None)
@given(group=GROUPS)
def test_length_reward_never_rewards_a_wrong_answer_for_being_short(group):
    lengths = torch.tensor([length for length, _ in group], dtype=torch.float64)
    correct = torch.tensor([ok for _, ok in group])
    reward = length_reward(lengths, correct)
    assert bool((reward[~correct] <= 0).all())
    for i in range(len(group)):
        for j in range(len(group)):
            if correct[i] and correct[j] and lengths[i] < lengths[j]:
                assert reward[i] >= reward[j]
    assert bool((reward >= -0.5).all() and (reward <= 0.5).all())


@settings(max_examples=100, deadline=None)
@given(group=GROUPS, alpha_min=st.floats(0.05, 1.0))
def test_group_reward_orders_correct_above_wrong_and_scales_length_by_pass_rate(group, alpha_min):
    cfg = EvoCoTConfig(alpha_min=alpha_min, redundancy_coef=0.0)
    responses = [ScoredResponse(text="Answer: 1", correct=ok, format_ok=True, length=n) for n, ok in group]
    rewards, stats = evo_cot_rewards(responses, cfg)
    pass_rate = sum(ok for _, ok in group) / len(group)
    assert stats["alpha"].item() == pytest.approx(min(max(pass_rate, alpha_min), 1.0))
    correct = torch.tensor([ok for _, ok in group])
    if correct.any() and (~correct).any():
        # The length term is at most 0.5 in size, so accuracy dominates.
        assert rewards[correct].min() >= rewards[~correct].max()


def test_length_position_endpoints():
    position = length_position(torch.tensor([10.0, 20.0, 30.0]))
    torch.testing.assert_close(position, torch.tensor([0.5, 0.0, -0.5]))
    assert bool((length_position(torch.tensor([7.0, 7.0])) == 0.5).all())


def test_format_penalty_for_think_markers_and_broken_format():
    group = [
        ScoredResponse(text="Answer: 3", correct=True, format_ok=True, length=5),
        ScoredResponse(text="<think>hm</think>\nAnswer: 3", correct=True, format_ok=True, length=5),
        ScoredResponse(text="3", correct=False, format_ok=False, length=5),
    ]
    rewards, stats = evo_cot_rewards(group, EvoCoTConfig())
    assert stats["format_error"].tolist() == [0.0, 1.0, 1.0]
    assert rewards[0] - rewards[1] == pytest.approx(0.5)


def test_verbose_responses_pay_the_redundancy_penalty(env_groups):
    cfg = EvoCoTConfig()
    for env, task, candidates in env_groups:
        group = [
            ScoredResponse(
                text=c.text, correct=c.correct, format_ok=env.verify(task, c.text).format_ok, length=len(c.text)
            )
            for c in candidates
        ]
        rewards, stats = evo_cot_rewards(group, cfg)
        cot = next(i for i, c in enumerate(candidates) if c.style == "cot")
        for i, c in enumerate(candidates):
            if c.style == "verbose":
                assert stats["redundancy"][i] > 0 and rewards[i] < rewards[cot]
            if c.style in ("cot", "short"):
                assert stats["redundancy"][i] == 0


def test_compression_penalty_is_optional_and_hits_degenerate_repetition():
    looping = "Let me think again.\n" * 40 + "Answer: 2"
    group = [
        ScoredResponse(text="1+1=2\nAnswer: 2", correct=True, format_ok=True, length=10),
        ScoredResponse(text=looping, correct=True, format_ok=True, length=10),
    ]
    assert compression_ratio(looping) < 0.1 < compression_ratio(group[0].text)
    off, _ = evo_cot_rewards(group, EvoCoTConfig(redundancy_coef=0.0))
    on, _ = evo_cot_rewards(group, EvoCoTConfig(redundancy_coef=0.0, compression_coef=1.0))
    assert on[0] == off[0] and on[1] < off[1] - 0.5


def test_config_and_input_errors():
    with pytest.raises(ValueError):
        EvoCoTConfig(alpha_min=0.0)
    with pytest.raises(ValueError):
        EvoCoTConfig(redundancy_coef=-1.0)
    with pytest.raises(ValueError):
        evo_cot_rewards([], EvoCoTConfig())
    with pytest.raises(TypeError):
        EvoCoTConfig(unknown=1.0)
