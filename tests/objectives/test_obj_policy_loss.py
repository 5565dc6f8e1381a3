"""Policy loss invariants: on-policy ratio 1, level equivalences, exact clipping (symmetric and asymmetric),
micro-batch invariance, agreement with a loop reference that takes each unit's ratio as a real geometric
mean, and the decoupled-PPO form (ratio against the proximal policy, behaviour weight from a correction)."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from training.objectives.mismatch import MismatchConfig, mismatch_correction
from training.objectives.policy_gradient import (
    PolicyLossConfig,
    decoupled_policy_loss,
    group_advantages,
    policy_loss,
    segment_mean,
)

B, T = 4, 24


def naive_loss(logp, logp_old, adv, mask, units, eps_low, eps_high, num_tokens):
    """Per unit u: |u| * min(r_u A, clip(r_u) A), r_u = exp(mean log-ratio) with the gradient of the mean."""
    total = logp.new_zeros(())
    for b in range(logp.shape[0]):
        for u in sorted({int(units[b, t]) for t in range(logp.shape[1]) if mask[b, t]}):
            idx = [t for t in range(logp.shape[1]) if mask[b, t] and int(units[b, t]) == u]
            ratio = torch.exp((logp[b, idx].float() - logp_old[b, idx].float()).mean())
            surrogate = torch.minimum(ratio * adv[b], ratio.clamp(1 - eps_low, 1 + eps_high) * adv[b])
            total = total + len(idx) * surrogate
    return -total / num_tokens


def make_batch(seed, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    logp_old = -3 * torch.rand(B, T, generator=g)
    logp = (logp_old + scale * torch.randn(B, T, generator=g)).requires_grad_()
    adv = torch.randn(B, generator=g)
    mask = torch.rand(B, T, generator=g) > 0.2
    mask[:, 0] = True
    # Sentences of 1..6 tokens; observation tokens carry -1.
    lengths = torch.randint(1, 7, (B, T), generator=g)
    units = torch.stack([torch.repeat_interleave(torch.arange(T), lengths[b])[:T] for b in range(B)])
    units = torch.where(mask, units, -1)
    return logp, logp_old, adv, mask, units


def level_units(level, units, mask):
    if level == "token":
        return torch.arange(T).expand(B, T)
    if level == "sequence":
        return torch.zeros(B, T, dtype=torch.long)
    return units


def loss_and_grad(logp, *args, fn=policy_loss, **kwargs):
    logp = logp.detach().clone().requires_grad_()
    loss, stats = fn(logp, *args, **kwargs)
    (grad,) = torch.autograd.grad(loss, logp)
    return loss.detach(), grad, stats


@pytest.mark.parametrize("level", ["token", "sentence", "sequence"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_loop_reference(level, seed):
    logp, logp_old, adv, mask, units = make_batch(seed)
    cfg = PolicyLossConfig(level=level)
    loss, grad, _ = loss_and_grad(logp, logp_old, adv, mask, units, cfg)
    ref_logp = logp.detach().clone().requires_grad_()
    ref = naive_loss(ref_logp, logp_old, adv, mask, level_units(level, units, mask), *cfg.clip_range, mask.sum())
    (ref_grad,) = torch.autograd.grad(ref, ref_logp)
    torch.testing.assert_close(loss, ref.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), level=st.sampled_from(["token", "sentence", "sequence"]))
def test_on_policy_ratio_is_one_and_gradient_is_plain_policy_gradient(seed, level):
    _, logp_old, adv, mask, units = make_batch(seed)
    loss, grad, stats = loss_and_grad(logp_old.clone(), logp_old, adv, mask, units, PolicyLossConfig(level=level))
    assert stats["ratio_mean"] == 1.0 and stats["ratio_max"] == 1.0
    assert stats["clip_fraction"] == 0.0 and stats["approx_kl"] == 0.0 and stats["logp_abs_diff"] == 0.0
    num_tokens = mask.sum()
    torch.testing.assert_close(grad, -adv[:, None] * mask.float() / num_tokens, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(loss, -(adv[:, None] * mask).sum() / num_tokens)


@pytest.mark.parametrize("seed", [0, 1])
def test_lpo_with_one_token_sentences_equals_grpo(seed):
    logp, logp_old, adv, mask, _ = make_batch(seed)
    one_token_units = torch.where(mask, torch.arange(T).expand(B, T), -1)
    lpo = loss_and_grad(logp, logp_old, adv, mask, one_token_units, PolicyLossConfig(level="sentence"))
    grpo = loss_and_grad(logp, logp_old, adv, mask, None, PolicyLossConfig(level="token", eps_low=0.03, eps_high=0.03))
    assert lpo[2]["clip_fraction"] > 0  # the comparison covers clipped tokens too
    torch.testing.assert_close(lpo[0], grpo[0], rtol=0, atol=0)
    torch.testing.assert_close(lpo[1], grpo[1], rtol=0, atol=0)


@pytest.mark.parametrize("seed", [0, 1])
def test_lpo_with_one_sentence_per_response_equals_gspo(seed):
    logp, logp_old, adv, mask, _ = make_batch(seed, scale=1e-3)
    one_sentence = torch.where(mask, 0, -1)
    gspo_cfg = PolicyLossConfig(level="sequence")
    lpo_cfg = PolicyLossConfig(level="sentence", eps_low=gspo_cfg.clip_range[0], eps_high=gspo_cfg.clip_range[1])
    lpo = loss_and_grad(logp, logp_old, adv, mask, one_sentence, lpo_cfg)
    gspo = loss_and_grad(logp, logp_old, adv, mask, None, gspo_cfg)
    torch.testing.assert_close(lpo[0], gspo[0], rtol=0, atol=0)
    torch.testing.assert_close(lpo[1], gspo[1], rtol=0, atol=0)


@pytest.mark.parametrize("level", ["token", "sentence"])
def test_clipping_engages_exactly_outside_the_band(level):
    # One row per advantage sign; each unit is two tokens with the same log-ratio so its ratio is exact.
    eps = 0.2 if level == "token" else 0.03
    cfg = PolicyLossConfig(level=level, eps_low=eps, eps_high=eps)
    delta = 1e-3
    ratios = [1 + eps - delta, 1 + eps + delta, 1 - eps + delta, 1 - eps - delta]
    log_ratio = torch.tensor([math.log(r) for r in ratios for _ in range(2)])
    logp_old = torch.full((2, 8), -1.0)
    logp = logp_old + log_ratio.expand(2, 8)
    adv = torch.tensor([1.0, -1.0])
    mask = torch.ones(2, 8, dtype=torch.bool)
    units = torch.arange(8).div(2, rounding_mode="floor").expand(2, 8).contiguous()
    _, grad, stats = loss_and_grad(logp, logp_old, adv, mask, units, cfg)
    unit_grad = grad[:, ::2]
    inside = torch.tensor([True, False, True, False])
    # A > 0: only a ratio above 1 + eps is clipped; A < 0: only one below 1 - eps.
    clipped = torch.stack([torch.tensor([False, True, False, False]), torch.tensor([False, False, False, True])])
    assert bool((unit_grad[clipped] == 0).all())
    assert bool((unit_grad[~clipped] != 0).all())
    assert bool((unit_grad[:, inside] != 0).all())
    assert stats["clip_fraction"] == pytest.approx(0.5)


@pytest.mark.parametrize("level", ["token", "sentence", "sequence"])
def test_micro_batches_with_global_denominator_sum_to_the_full_batch(level):
    logp, logp_old, adv, mask, units = make_batch(3)
    cfg = PolicyLossConfig(level=level)
    full_loss, full_grad, _ = loss_and_grad(logp, logp_old, adv, mask, units, cfg)
    for split in ([1, 3], [2, 2], [1, 1, 1, 1]):
        total, grads, start = 0.0, [], 0
        for size in split:
            rows = slice(start, start + size)
            loss, grad, _ = loss_and_grad(
                logp[rows], logp_old[rows], adv[rows], mask[rows], units[rows], cfg, num_tokens=mask.sum()
            )
            total, start = total + loss, start + size
            grads.append(grad)
        torch.testing.assert_close(total, full_loss, rtol=1e-6, atol=1e-8)
        torch.testing.assert_close(torch.cat(grads), full_grad, rtol=1e-6, atol=1e-9)


def test_mismatch_weight_scales_tokens_but_keeps_the_denominator():
    logp, logp_old, adv, mask, units = make_batch(4)
    cfg = PolicyLossConfig(level="sentence")
    plain_loss, plain_grad, _ = loss_and_grad(logp, logp_old, adv, mask, units, cfg)
    ones = loss_and_grad(logp, logp_old, adv, mask, units, cfg, mismatch_weight_BT=torch.ones(B, T))
    torch.testing.assert_close(ones[0], plain_loss, rtol=0, atol=0)
    # A mask that drops tokens: their gradient vanishes, every other token's is unchanged.
    keep = (torch.rand(B, T, generator=torch.Generator().manual_seed(0)) > 0.3).float()
    _, grad, _ = loss_and_grad(logp, logp_old, adv, mask, units, cfg, mismatch_weight_BT=keep)
    torch.testing.assert_close(grad, plain_grad * keep, rtol=0, atol=0)
    # Halving every weight halves the loss: the denominator is the token count, not the weight sum.
    half, _, _ = loss_and_grad(logp, logp_old, adv, mask, units, cfg, mismatch_weight_BT=torch.full((B, T), 0.5))
    torch.testing.assert_close(half, 0.5 * plain_loss)


def test_garbage_on_masked_positions_never_leaks():
    logp, logp_old, adv, mask, units = make_batch(5)
    dirty = logp.detach().clone()
    dirty[~mask] = float("-inf")
    clean_loss, clean_grad, _ = loss_and_grad(logp, logp_old, adv, mask, units, PolicyLossConfig())
    loss, grad, _ = loss_and_grad(dirty, logp_old, adv, mask, units, PolicyLossConfig())
    torch.testing.assert_close(loss, clean_loss, rtol=0, atol=0)
    torch.testing.assert_close(grad, clean_grad, rtol=0, atol=0)


def test_bf16_inputs_are_upcast_before_subtracting():
    logp, logp_old, adv, mask, units = make_batch(6)
    low, low_old = logp.detach().bfloat16(), logp_old.bfloat16()
    loss_bf16, grad, _ = loss_and_grad(low, low_old, adv, mask, units, PolicyLossConfig())
    loss_fp32, _, _ = loss_and_grad(low.float(), low_old.float(), adv, mask, units, PolicyLossConfig())
    assert loss_bf16.dtype == torch.float32 and grad.dtype == torch.bfloat16
    torch.testing.assert_close(loss_bf16, loss_fp32, rtol=0, atol=0)


def test_stats_are_raw_unit_statistics():
    logp_old = torch.zeros(1, 4)
    logp = torch.log(torch.tensor([[2.0, 2.0, 0.5, 1.0]]))
    units = torch.tensor([[0, 0, 1, 2]])
    _, _, stats = loss_and_grad(logp, logp_old, torch.ones(1), torch.ones(1, 4), units, PolicyLossConfig())
    assert stats["ratio_max"] == pytest.approx(2.0)  # before clipping to 1.03
    assert stats["ratio_mean"] == pytest.approx((2.0 + 0.5 + 1.0) / 3)
    assert stats["clip_fraction"] == pytest.approx(2 / 3)
    assert int(stats["num_units"]) == 3
    expected_kl = ((2 - 1 - math.log(2)) * 2 + (0.5 - 1 - math.log(0.5))) / 4
    assert stats["approx_kl"] == pytest.approx(expected_kl, rel=1e-6)


def test_shape_and_config_errors():
    logp, logp_old, adv, mask, units = make_batch(0)
    cfg = PolicyLossConfig()
    with pytest.raises(ValueError, match="logp_old"):
        policy_loss(logp, logp_old[:, :-1], adv, mask, units, cfg)
    with pytest.raises(ValueError, match="advantages"):
        policy_loss(logp, logp_old, adv[:-1], mask, units, cfg)
    with pytest.raises(ValueError, match="needs unit_ids"):
        policy_loss(logp, logp_old, adv, mask, None, cfg)
    for bad_units in (torch.full((B, T), -1), torch.full((B, T), T)):
        with pytest.raises(ValueError, match="unit id in"):
            policy_loss(logp, logp_old, adv, mask, bad_units, cfg)
    with pytest.raises(ValueError, match="num_tokens"):
        policy_loss(logp, logp_old, adv, mask, units, cfg, num_tokens=0)
    with pytest.raises(ValueError, match="level"):
        PolicyLossConfig(level="paragraph")
    with pytest.raises(ValueError, match="clip range"):
        PolicyLossConfig(level="token", eps_low=1.5)
    assert PolicyLossConfig(level="sequence").clip_range == (3e-4, 4e-4)


def test_segment_mean_matches_loop():
    x = torch.randn(2, 6, requires_grad=True)
    units = torch.tensor([[0, 0, 1, 1, 1, -1], [3, 3, 0, 5, 5, 5]])
    mask = units >= 0
    out = segment_mean(x, units, mask)
    for b in range(2):
        for t in range(6):
            if not mask[b, t]:
                assert out[b, t] == 0
                continue
            same = (units[b] == units[b, t]) & mask[b]
            assert out[b, t].item() == pytest.approx(x[b, same].mean().item(), rel=1e-6)
    out.sum().backward()
    assert x.grad[~mask].abs().sum() == 0


def test_group_advantages():
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]]))
    torch.testing.assert_close(adv[0], torch.tensor([1.0, -1.0, -1.0, 1.0]), atol=1e-5, rtol=0)
    assert bool((adv[1] == 0).all())
    assert group_advantages(torch.tensor([0.7])).item() == 0.0
    with pytest.raises(ValueError):
        group_advantages(torch.tensor(1.0))


def test_asymmetric_band_clips_each_side_at_its_own_epsilon():
    # Clip-higher (DAPO): the band is [1 - 0.2, 1 + 0.28]; ratios just inside either edge are not clipped.
    cfg = PolicyLossConfig(level="token", eps_low=0.2, eps_high=0.28)
    ratios = torch.tensor([[0.79, 0.81, 1.27, 1.29]])
    logp_old = torch.full((1, 4), -1.0)
    _, grad_pos, stats = loss_and_grad(logp_old + ratios.log(), logp_old, torch.ones(1), torch.ones(1, 4), None, cfg)
    _, grad_neg, _ = loss_and_grad(logp_old + ratios.log(), logp_old, -torch.ones(1), torch.ones(1, 4), None, cfg)
    assert stats["clip_fraction"] == pytest.approx(0.5)
    assert grad_pos[0].ne(0).tolist() == [True, True, True, False]  # A > 0: only above 1.28 is clipped
    assert grad_neg[0].ne(0).tolist() == [False, True, True, True]  # A < 0: only below 0.8 is clipped


def make_three_policies(seed, drift=0.05, mismatch=0.05):
    """Current (with grad), proximal and behaviour log-probs for ``make_batch``'s rows."""
    logp, logp_prox, adv, mask, units = make_batch(seed, scale=drift)
    g = torch.Generator().manual_seed(seed + 100)
    logp_behav = logp_prox + mismatch * torch.randn(logp_prox.shape, generator=g)
    return logp, logp_prox, logp_behav, adv, mask, units


@pytest.mark.parametrize("level", ["token", "sentence", "sequence"])
def test_decoupled_first_update_has_ratio_one_and_the_behaviour_weight(level):
    # First update after sampling: current == proximal, so r = 1 whatever the behaviour policy was; the
    # gradient is the plain policy gradient scaled by w_behav = min(pi_prox / pi_behav, C) per token.
    _, logp_prox, logp_behav, adv, mask, units = make_three_policies(7, mismatch=0.3)
    cfg, tis = PolicyLossConfig(level=level), MismatchConfig(method="tis", tis_cap=1.5)
    current = logp_prox.clone().requires_grad_()
    loss, stats = decoupled_policy_loss(current, logp_prox, logp_behav, adv, mask, units, cfg, tis)
    (grad,) = torch.autograd.grad(loss, current)
    assert stats["ratio_mean"] == 1.0 and stats["ratio_max"] == 1.0 and stats["clip_fraction"] == 0.0
    w = torch.where(mask, (logp_prox - logp_behav).exp().clamp(max=1.5), 0.0)
    torch.testing.assert_close(grad, -adv[:, None] * w / mask.sum(), rtol=1e-5, atol=1e-9)
    assert stats["behav/truncated_fraction"] > 0 and stats["behav/logp_abs_diff"] > 0


@pytest.mark.parametrize("method", ["none", "tis", "icepop", "kpop", "mis"])
def test_decoupled_equals_the_loss_with_its_weight_and_clips_against_the_proximal_policy(method):
    logp, logp_prox, logp_behav, adv, mask, units = make_three_policies(8)
    cfg, correction = PolicyLossConfig(level="sentence"), MismatchConfig(method=method, kpop_phi=1e-4)
    weight, _ = mismatch_correction(logp_prox, logp_behav, mask, correction)
    decoupled = loss_and_grad(logp, logp_prox, logp_behav, adv, mask, units, cfg, correction, fn=decoupled_policy_loss)
    weighted = loss_and_grad(logp, logp_prox, adv, mask, units, cfg, mismatch_weight_BT=weight)
    torch.testing.assert_close(decoupled[0], weighted[0], rtol=0, atol=0)
    torch.testing.assert_close(decoupled[1], weighted[1], rtol=0, atol=0)
    # The ratio is pi / pi_prox: its statistics do not depend on the behaviour policy.
    other_behav = logp_prox + 0.5
    other = loss_and_grad(logp, logp_prox, other_behav, adv, mask, units, cfg, correction, fn=decoupled_policy_loss)
    for key in ("ratio_mean", "ratio_max", "clip_fraction", "approx_kl"):
        assert other[2][key] == decoupled[2][key], key


@pytest.mark.parametrize("level", ["token", "sentence", "sequence"])
@pytest.mark.parametrize("method", ["kpop", "mis"])
def test_decoupled_micro_batches_with_global_denominator_sum_to_the_full_batch(level, method):
    logp, logp_prox, logp_behav, adv, mask, units = make_three_policies(9, mismatch=0.2)
    cfg, correction = PolicyLossConfig(level=level), MismatchConfig(method=method, kpop_phi=1e-3)
    full = loss_and_grad(logp, logp_prox, logp_behav, adv, mask, units, cfg, correction, fn=decoupled_policy_loss)
    assert 0 < full[2]["behav/masked_fraction"] < 1  # the split covers masked and kept tokens
    halves = [slice(0, 1), slice(1, B)]
    parts = [
        loss_and_grad(
            logp[rows], logp_prox[rows], logp_behav[rows], adv[rows], mask[rows], units[rows], cfg, correction,
            fn=decoupled_policy_loss, num_tokens=mask.sum(),
        )
        for rows in halves
    ]  # fmt: skip
    torch.testing.assert_close(parts[0][0] + parts[1][0], full[0], rtol=1e-6, atol=1e-8)
    torch.testing.assert_close(torch.cat([parts[0][1], parts[1][1]]), full[1], rtol=1e-6, atol=1e-9)


def test_decoupled_extra_weight_multiplies_and_shapes_are_checked():
    logp, logp_prox, logp_behav, adv, mask, units = make_three_policies(10)
    cfg, correction = PolicyLossConfig(), MismatchConfig(method="none")
    keep = (torch.rand(B, T, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    plain = loss_and_grad(logp, logp_prox, logp_behav, adv, mask, units, cfg, correction, fn=decoupled_policy_loss)
    masked = loss_and_grad(
        logp, logp_prox, logp_behav, adv, mask, units, cfg, correction, fn=decoupled_policy_loss, extra_weight_BT=keep
    )
    torch.testing.assert_close(masked[1], plain[1] * keep, rtol=0, atol=0)
    with pytest.raises(ValueError, match="logp_behav"):
        decoupled_policy_loss(logp, logp_prox, logp_behav[:, :-1], adv, mask, units, cfg, correction)
    with pytest.raises(ValueError, match="extra_weight"):
        decoupled_policy_loss(logp, logp_prox, logp_behav, adv, mask, units, cfg, correction, extra_weight_BT=keep[:1])
