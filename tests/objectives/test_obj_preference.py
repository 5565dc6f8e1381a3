"""Bidirectional preference: pair construction, the offset-DPO loss, scores and focal rubric weights."""

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from training.objectives.preference import (
    DEFAULT_DIMS,
    FocalRubricWeights,
    PreferenceConfig,
    bidirectional_scores,
    build_preference_pairs,
    focal_pair_weights,
    preference_loss,
    rubric_matrix,
)

ROWS = st.lists(
    st.fixed_dictionaries(
        {
            "prompt_id": st.integers(0, 2),
            "text": st.sampled_from(
                ["Answer: 1", "1+1=2\nAnswer: 2", "2\n2\nAnswer: 2", "x=2\nLet me verify: x=2\nAnswer: 2"]
            ),
            "correct": st.booleans(),
            "format_ok": st.booleans(),
            "length": st.integers(1, 50),
        }
    ),
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(rows=ROWS, cap=st.one_of(st.none(), st.integers(1, 3)))
def test_pairs_never_match_chosen_and_rejected_and_chosen_is_shortest_correct(rows, cap):
    pairs = build_preference_pairs(rows, max_pairs_per_prompt=cap)
    for pair in pairs:
        assert pair.chosen != pair.rejected
        group = [r for r in rows if r["prompt_id"] == pair.prompt_id]
        good = [r for r in group if r["correct"] and r["format_ok"]]
        assert pair.chosen in {r["text"] for r in good}
        assert min(r["length"] for r in good) in {r["length"] for r in good if r["text"] == pair.chosen}
        assert pair.chosen_score >= pair.rejected_score or pair.kind in ("redundant", "longer")
        assert -1.0 <= pair.rejected_score <= 1.0 and 0.0 <= pair.chosen_score <= 1.0
    for prompt_id in {r["prompt_id"] for r in rows}:
        count = sum(p.prompt_id == prompt_id for p in pairs)
        assert cap is None or count <= cap


def test_pairs_from_environment_candidates(env_groups):
    for env, task, candidates in env_groups:
        rows = [
            {"prompt_id": task.task_id, "text": c.text, "correct": c.correct, "format_ok": True, "length": len(c.text)}
            for c in candidates
        ]
        pairs = build_preference_pairs(rows)
        short = next(c.text for c in candidates if c.style == "short")
        assert pairs and all(p.chosen == short for p in pairs)
        kinds = [p.kind for p in pairs]
        assert kinds == sorted(kinds, key=["format", "wrong", "redundant", "longer"].index)
        assert {"wrong", "redundant"} <= set(kinds)
        assert all(env.verify(task, p.rejected).correct is False for p in pairs if p.kind == "wrong")


def test_scores_are_bidirectional():
    group = [
        {"text": "Answer: 2", "correct": True, "format_ok": True, "length": 3},
        {"text": "1+1=2\n1+1=2\nAnswer: 2", "correct": True, "format_ok": True, "length": 9},
        {"text": "Answer: 3", "correct": False, "format_ok": True, "length": 3},
        {"text": "<think>", "correct": False, "format_ok": False, "length": 3},
    ]
    rubric = rubric_matrix(group)
    scores = bidirectional_scores(group, rubric, torch.tensor([0.5, 0.5]))
    assert scores[0] == 1.0 and 0.0 <= scores[1] < scores[0]
    assert -1.0 <= scores[2] <= -0.5 and scores[3] == -1.0


def loss_at(margin, score_gap=0.0, beta=0.1):
    chosen = torch.tensor([[margin, 0.0]], requires_grad=True)
    zeros = torch.zeros(1, 2)
    mask = torch.ones(1, 2)
    loss, stats = preference_loss(
        chosen, zeros, zeros, zeros, mask, mask, torch.tensor([score_gap]), torch.zeros(1), PreferenceConfig(beta=beta)
    )
    (grad,) = torch.autograd.grad(loss, chosen)
    return loss.item(), grad, stats


def test_loss_falls_as_the_policy_margin_grows_and_rises_with_the_offset():
    losses = [loss_at(m)[0] for m in (-5.0, -1.0, 0.0, 1.0, 5.0, 20.0)]
    assert all(a > b for a, b in itertools.pairwise(losses))
    assert loss_at(0.0)[0] == pytest.approx(torch.nn.functional.softplus(torch.tensor(0.0)).item())
    assert loss_at(1.0, score_gap=1.0)[0] > loss_at(1.0, score_gap=0.2)[0] > loss_at(1.0)[0]
    _, grad, stats = loss_at(1.0)
    assert bool((grad < 0).all())
    assert stats["accuracy"] == 1.0 and stats["implicit_margin"] == pytest.approx(0.1)


def test_loss_ignores_masked_tokens_and_reference_gradients():
    policy = torch.tensor([[-1.0, -2.0, -50.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, -2.0, 0.0]], requires_grad=True)
    mask = torch.tensor([[1, 1, 0]])
    loss, _ = preference_loss(policy, policy, ref, ref, mask, mask, torch.ones(1), torch.zeros(1), PreferenceConfig())
    loss.backward()
    assert policy.grad[0, 2] == 0 and policy.grad[0, :2].abs().sum() == 0  # same policy on both sides
    assert ref.grad is None  # the reference is frozen


def test_loss_shape_errors():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="chosen"):
        preference_loss(x, x, x[:, :2], x, x, x, torch.zeros(2), torch.zeros(2), PreferenceConfig())
    with pytest.raises(ValueError, match="scores"):
        preference_loss(x, x, x, x, x, x, torch.zeros(3), torch.zeros(2), PreferenceConfig())


def test_focal_weights_move_away_from_saturated_dimensions_and_sum_to_one():
    focal = FocalRubricWeights(("concise", "non_redundant", "informative"), PreferenceConfig(focal_momentum=0.5))
    torch.testing.assert_close(focal.weights(), torch.full((3,), 1 / 3))
    before = focal.update(torch.tensor([[0.5, 0.5, 0.5]] * 4))
    torch.testing.assert_close(before, torch.full((3,), 1 / 3))
    for _ in range(5):
        weights = focal.update(torch.tensor([[1.0, 0.6, 0.1]] * 4))
        assert weights.sum().item() == pytest.approx(1.0)
    assert weights[0] < weights[1] < weights[2]
    assert weights[0] < before[0] and weights[2] > before[2]
    saturated = FocalRubricWeights(("a", "b"), PreferenceConfig(focal_momentum=0.0))
    torch.testing.assert_close(saturated.update(torch.ones(2, 2)), torch.full((2,), 0.5))


def test_focal_state_round_trips_and_rejects_other_dimensions():
    focal = FocalRubricWeights(DEFAULT_DIMS, PreferenceConfig())
    focal.update(torch.tensor([[0.9, 0.2]]))
    restored = FocalRubricWeights(DEFAULT_DIMS, PreferenceConfig())
    restored.load_state_dict(focal.state_dict())
    torch.testing.assert_close(restored.weights(), focal.weights())
    with pytest.raises(ValueError, match="dimensions"):
        FocalRubricWeights(("x", "y"), PreferenceConfig()).load_state_dict(focal.state_dict())
    with pytest.raises(ValueError, match="scores"):
        focal.update(torch.zeros(3))


def test_focal_pair_weights_follow_the_dimension_each_pair_is_about():
    weights = torch.tensor([0.8, 0.2])  # concise, non_redundant
    got = focal_pair_weights(["format", "wrong", "redundant", "longer"], DEFAULT_DIMS, weights)
    # Correctness pairs keep 1; a rubric pair gets D * w_d of its dimension (1 each at uniform weights).
    torch.testing.assert_close(got, torch.tensor([1.0, 1.0, 0.4, 1.6]))
    uniform = focal_pair_weights(["redundant", "longer"], DEFAULT_DIMS, torch.tensor([0.5, 0.5]))
    torch.testing.assert_close(uniform, torch.ones(2))
    # A dimension that is not tracked leaves its pairs at 1.
    torch.testing.assert_close(focal_pair_weights(["redundant"], ("concise",), torch.ones(1)), torch.ones(1))
    with pytest.raises(ValueError, match="unknown pair kind"):
        focal_pair_weights(["shorter"], DEFAULT_DIMS, weights)


def test_a_pair_of_weight_zero_has_no_gradient_and_the_others_keep_theirs():
    torch.manual_seed(0)
    chosen = torch.randn(2, 3, requires_grad=True)
    rejected = torch.randn(2, 3, requires_grad=True)
    ref, mask = torch.zeros(2, 3), torch.ones(2, 3)
    scores = torch.tensor([1.0, 0.4]), torch.tensor([-1.0, 0.1])

    def grads(weight):
        loss, _ = preference_loss(chosen, rejected, ref, ref, mask, mask, *scores, PreferenceConfig(), weight_P=weight)
        return torch.autograd.grad(loss, (chosen, rejected))

    plain, weighted = grads(None), grads(torch.tensor([1.0, 0.0]))
    for full, part in zip(plain, weighted, strict=True):
        assert part[1].abs().sum() == 0 and full[1].abs().sum() > 0
        torch.testing.assert_close(part[0], full[0])  # divided by P either way
    ones = grads(torch.ones(2))
    for full, part in zip(plain, ones, strict=True):
        torch.testing.assert_close(part, full)
    with pytest.raises(ValueError, match="pair weights"):
        grads(torch.tensor([1.0, -1.0]))
