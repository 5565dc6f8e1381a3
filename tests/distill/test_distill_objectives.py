"""The two distillation losses against hand-computed values, and the invariants their docstrings claim."""

import math

import pytest
import torch
import torch.nn.functional as F

from training.objectives.distill_kl import on_policy_reverse_kl, topk_forward_kl


def _one_position(logits, ids, probs):
    """[1, 1, V] logits and [1, 1, K] teacher ids / log-probs for one position."""
    return (
        torch.tensor(logits, dtype=torch.float32)[None, None],
        torch.tensor(ids)[None, None],
        torch.tensor(probs, dtype=torch.float64).log().float()[None, None],
    )


def test_topk_kl_by_hand_with_a_rest_bucket():
    # Student uniform over 4 ids: q = 1/4 each, so q(rest outside {0, 1}) = 1/2.
    # Teacher top-2 {0: 1/2, 1: 1/4}: tail 1/4.
    # KL = 1/2 ln(1/2 / 1/4) + 1/4 ln(1/4 / 1/4) + 1/4 ln(1/4 / 1/2) = (1/2 - 1/4) ln 2 = ln(2) / 4.
    logits, ids, logp = _one_position([0.0, 0.0, 0.0, 0.0], [0, 1], [0.5, 0.25])
    loss, stats = topk_forward_kl(logits, ids, logp, torch.ones(1, 1))
    assert loss.item() == pytest.approx(math.log(2) / 4, abs=1e-6)
    assert stats["teacher_tail_mass"].item() == pytest.approx(0.25, abs=1e-6)
    assert stats["student_tail_mass"].item() == pytest.approx(0.5, abs=1e-6)
    assert stats["top1_agreement"].item() == 1.0  # argmax of a uniform row is id 0, the teacher's top-1
    assert stats["tokens"].item() == 1.0


def test_topk_kl_without_tail_mass_has_no_rest_term_and_finite_gradients():
    # The teacher's two ids hold all its mass: KL = 1/2 ln(1/2 / 1/4) * 2 = ln 2, whatever the student's tail.
    logits, ids, logp = _one_position([0.0, 0.0, 0.0, 0.0], [2, 3], [0.5, 0.5])
    logits.requires_grad_(True)
    loss, stats = topk_forward_kl(logits, ids, logp, torch.ones(1, 1))
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)
    assert stats["teacher_tail_mass"].item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(logits.grad).all()
    # Gradient of KL(p || softmax(z)) in z is q - p: mass moves from ids 0, 1 to the teacher's ids 2, 3.
    torch.testing.assert_close(logits.grad[0, 0], torch.tensor([0.25, 0.25, -0.25, -0.25]), atol=1e-5, rtol=0)


def test_topk_kl_with_k_equal_to_vocabulary_is_the_full_kl():
    torch.manual_seed(0)
    B, T, V = 2, 3, 7
    student_BTV, teacher_BTV = torch.randn(B, T, V), torch.randn(B, T, V)
    logp_T = F.log_softmax(teacher_BTV, -1)
    ids_BTV = torch.argsort(torch.rand(B, T, V), dim=-1)  # every id once, in any order
    loss, _ = topk_forward_kl(student_BTV, ids_BTV, logp_T.gather(2, ids_BTV), torch.ones(B, T))
    full = F.kl_div(F.log_softmax(student_BTV, -1), logp_T, log_target=True, reduction="none").sum(-1).mean()
    assert loss.item() == pytest.approx(full.item(), abs=1e-5)


def test_topk_kl_is_a_lower_bound_of_the_full_kl_and_zero_on_matching_buckets():
    torch.manual_seed(1)
    B, T, V, K = 3, 4, 11, 3
    student_BTV, teacher_BTV = torch.randn(B, T, V), torch.randn(B, T, V)
    logp_T = F.log_softmax(teacher_BTV, -1)
    top_logp, top_ids = logp_T.topk(K, dim=-1)
    mask = torch.ones(B, T)
    loss, stats = topk_forward_kl(student_BTV, top_ids, top_logp, mask)
    full = F.kl_div(F.log_softmax(student_BTV, -1), logp_T, log_target=True, reduction="none").sum(-1).mean()
    assert 0.0 < loss.item() <= full.item() + 1e-6

    # A student that agrees on the K ids and on the tail's total, but splits the tail its own way: KL = 0.
    tail = torch.ones(B, T, V, dtype=torch.bool).scatter(2, top_ids, False)
    own_split = torch.where(tail, torch.rand(B, T, V) + 0.1, 0.0)
    tail_mass = 1.0 - top_logp.exp().sum(-1, keepdim=True)
    probs = own_split / own_split.sum(-1, keepdim=True) * tail_mass
    probs = probs.scatter(2, top_ids, top_logp.exp())
    matched, _ = topk_forward_kl(probs.log(), top_ids, top_logp, mask)
    assert matched.item() == pytest.approx(0.0, abs=1e-5)
    assert stats["teacher_tail_mass"].item() == pytest.approx(tail_mass.mean().item(), abs=1e-5)


def test_topk_kl_is_a_masked_mean_and_the_denominator_can_be_fixed():
    logits, ids, logp = _one_position([0.0, 0.0, 0.0, 0.0], [0, 1], [0.5, 0.25])
    # Row of three positions; only the middle one counts. The others hold a wildly different teacher.
    logits_BTV = logits.expand(1, 3, 4).clone()
    ids_BTK = ids.expand(1, 3, 2).clone()
    logp_BTK = torch.stack([torch.log(torch.tensor([0.99, 0.005])), logp[0, 0], torch.log(torch.tensor([0.9, 0.1]))])[
        None
    ]
    mask = torch.tensor([[0.0, 1.0, 0.0]])
    loss, stats = topk_forward_kl(logits_BTV, ids_BTK, logp_BTK, mask)
    assert loss.item() == pytest.approx(math.log(2) / 4, abs=1e-6)
    assert stats["tokens"].item() == 1.0
    fixed, _ = topk_forward_kl(logits_BTV, ids_BTK, logp_BTK, mask, num_tokens=4)
    assert fixed.item() == pytest.approx(math.log(2) / 16, abs=1e-6)


def test_topk_kl_rejects_mismatched_shapes():
    logits = torch.zeros(1, 2, 5)
    with pytest.raises(ValueError, match="\\[B, T, K\\]"):
        topk_forward_kl(logits, torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, 2), torch.ones(1, 2))
    with pytest.raises(ValueError, match="mask"):
        topk_forward_kl(logits, torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 2, 2), torch.ones(2, 1))


def test_on_policy_loss_by_hand():
    # k = log pi_S - log pi_T = [-1 + 1.5, -2 + 1] = [0.5, -1]; on-policy the ratio is 1: loss = mean k = -0.25,
    # and d loss / d log pi_S = k / N = [0.25, -0.5].
    student = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    teacher = torch.tensor([[-1.5, -1.0]])
    loss, stats = on_policy_reverse_kl(student, student.detach(), teacher, torch.ones(1, 2))
    loss.backward()
    assert loss.item() == pytest.approx(-0.25)
    assert stats["reverse_kl"].item() == pytest.approx(-0.25)
    assert stats["ratio_max"].item() == pytest.approx(1.0)
    torch.testing.assert_close(student.grad, torch.tensor([[0.25, -0.5]]))


def test_on_policy_loss_masks_padding_and_weights_off_policy_tokens_by_the_ratio():
    behaviour = torch.tensor([[-1.0, -2.0, 0.0]])
    # The current student doubles the first token's probability: ratio 2 there.
    student = behaviour + torch.tensor([[math.log(2.0), 0.0, 5.0]])
    # The padded third position holds -inf: it must not reach the value.
    teacher = torch.tensor([[-1.5, -1.0, -math.inf]])
    loss, stats = on_policy_reverse_kl(student, behaviour, teacher, torch.tensor([[1.0, 1.0, 0.0]]))
    assert loss.item() == pytest.approx((0.5 * 2.0 - 1.0) / 2)
    assert stats["reverse_kl"].item() == pytest.approx(-0.25)  # the estimate is the behaviour policy's
    assert stats["ratio_max"].item() == pytest.approx(2.0)
    assert stats["tokens"].item() == 2.0


def test_on_policy_expected_gradient_is_the_exact_reverse_kl_gradient():
    # Enumerate every token of one categorical step, weighted by the student's own probability (the
    # expectation over samples): the surrogate's gradient equals grad KL(pi_S || pi_T) exactly.
    torch.manual_seed(2)
    V = 6
    theta = torch.randn(V, requires_grad=True)
    logp_T = F.log_softmax(torch.randn(V), -1)
    logq = F.log_softmax(theta, -1)
    weights = logq.detach().exp()[None]
    loss, _ = on_policy_reverse_kl(logq[None], logq.detach()[None], logp_T[None], weights)
    (surrogate_grad,) = torch.autograd.grad(loss, theta)
    logq = F.log_softmax(theta, -1)
    exact = (logq.exp() * (logq - logp_T)).sum()
    (exact_grad,) = torch.autograd.grad(exact, theta)
    torch.testing.assert_close(surrogate_grad, exact_grad, atol=1e-6, rtol=1e-5)
    assert loss.item() == pytest.approx(exact.item(), abs=1e-6)


def test_on_policy_loss_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="teacher_logp"):
        on_policy_reverse_kl(torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(1, 2), torch.ones(1, 3))
