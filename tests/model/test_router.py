"""Router math, expert dispatch and aux-loss-free balancing of the Ling-2.0 MoE (METHODS.md §1.2)."""

import dataclasses

import pytest
import torch

from configs.model import tiny_model
from model.layers import SwiGLUMLP
from model.moe import Router, dispatch_to_experts, group_limited_topk, update_expert_bias

# 8 experts in 4 groups of 2. Group top-2 sums: g0 = 0.95, g1 = 1.22, g2 = 1.05, g3 = 0.2.
SCORES = torch.tensor([[0.95, 0.0, 0.6, 0.62, 0.5, 0.55, 0.1, 0.1]])


def router_config(**overrides):
    base = dict(hidden_size=8, num_experts=8, n_group=4, topk_group=2, num_experts_per_tok=2, routed_scaling_factor=2.5)
    return dataclasses.replace(tiny_model(), **{**base, **overrides})


def identity_router(**overrides) -> Router:
    """Router whose logits equal its input (W = I), so tests choose the logits directly."""
    router = Router(router_config(**overrides))
    with torch.no_grad():
        router.weight.copy_(torch.eye(8))
    return router


def test_group_limit_drops_the_best_expert_of_a_weak_group():
    # Expert 0 has the best single score, but its group ranks third by top-2 sum and is dropped.
    assert set(group_limited_topk(SCORES, n_group=4, topk_group=2, top_k=2)[0].tolist()) == {2, 3}
    assert set(group_limited_topk(SCORES, n_group=4, topk_group=2, top_k=3)[0].tolist()) == {2, 3, 5}
    # Keeping three groups brings expert 0 back.
    assert set(group_limited_topk(SCORES, n_group=4, topk_group=3, top_k=2)[0].tolist()) == {0, 3}


def test_weights_are_normalised_unbiased_scores_times_scaling():
    router = identity_router()
    logits = torch.randn(5, 8)
    idx, weight, out_logits = router(logits)
    scores = torch.sigmoid(logits)
    picked = scores.gather(1, idx)
    torch.testing.assert_close(weight, picked / picked.sum(-1, keepdim=True) * 2.5)
    torch.testing.assert_close(weight.sum(-1), torch.full((5,), 2.5))
    torch.testing.assert_close(out_logits, logits)
    assert weight.dtype == out_logits.dtype == torch.float32


def test_single_expert_weight_is_not_normalised():
    router = identity_router(num_experts_per_tok=1)
    logits = torch.randn(5, 8)
    idx, weight, _ = router(logits)
    torch.testing.assert_close(weight, torch.sigmoid(logits).gather(1, idx) * 2.5)


def test_bias_changes_selection_but_not_weight_values():
    router = identity_router()
    logits = torch.logit(SCORES.clamp(1e-3, 1 - 1e-3))
    idx_before, _, _ = router(logits)
    router.expert_bias[7] = 10.0  # lifts group 3 and expert 7 into the selection
    idx_after, weight_after, _ = router(logits)
    assert 7 in idx_after[0].tolist() and 7 not in idx_before[0].tolist()
    scores = torch.sigmoid(logits).gather(1, idx_after)  # unbiased scores of the new selection
    torch.testing.assert_close(weight_after, scores / scores.sum(-1, keepdim=True) * 2.5)


def test_expert_bias_stays_fp32_and_gradient_free():
    router = Router(router_config()).to(torch.bfloat16)
    assert router.weight.dtype == torch.bfloat16
    assert router.expert_bias.dtype == torch.float32
    assert "expert_bias" not in dict(router.named_parameters())


def test_bias_update_is_zero_mean_sign_step():
    router = Router(router_config())
    counts = torch.tensor([[40.0, 10, 10, 10, 12, 8, 10, 10]])  # mean 13.75
    update_expert_bias(router, counts, rate=1e-3)
    sign = torch.sign(counts.mean() - counts[0])
    torch.testing.assert_close(router.expert_bias, 1e-3 * (sign - sign.mean()))
    assert abs(router.expert_bias.sum().item()) < 1e-9
    assert router.expert_bias[0] < 0 < router.expert_bias[1]


def test_bias_updates_balance_a_skewed_router():
    torch.manual_seed(0)
    router = Router(router_config(n_group=1, topk_group=1))
    with torch.no_grad():
        router.weight.normal_(0, 0.5)
        router.weight[:2] += 1.0  # experts 0 and 1 win for most tokens
    x = torch.randn(512, 8) + 1.0

    def imbalance() -> float:
        counts = torch.bincount(router(x)[0].flatten(), minlength=8).float()
        return (counts.max() / counts.mean()).item()

    before = imbalance()
    history = []
    for _ in range(200):
        counts = torch.bincount(router(x)[0].flatten(), minlength=8).float()
        update_expert_bias(router, counts[None], rate=3e-3)
        history.append(imbalance())
    assert before > 3.5
    # Fixed-size sign steps oscillate around balance, so judge the average over the last steps.
    assert sum(history[-50:]) / 50 < 1.5


def test_bias_update_checks_layer_count(model):
    with pytest.raises(ValueError, match="MoE layers"):
        update_expert_bias(model, torch.zeros(2, 16), rate=1e-3)


def test_dispatch_matches_per_token_reference():
    torch.manual_seed(0)
    experts = [SwiGLUMLP(8, 4) for _ in range(6)]
    x = torch.randn(11, 8, requires_grad=True)
    idx = torch.stack([torch.randperm(6)[:2] for _ in range(11)])
    weight = torch.rand(11, 2, requires_grad=True)

    y = dispatch_to_experts(x, idx, weight, experts)
    reference = torch.stack([
        sum(weight[n, a] * experts[idx[n, a]](x[n]) for a in range(2)) for n in range(11)
    ])  # fmt: skip
    torch.testing.assert_close(y, reference)

    grad_out = torch.randn_like(y)
    grads = torch.autograd.grad(y, [x, weight, experts[0].up_proj.weight], grad_out)
    reference_grads = torch.autograd.grad(reference, [x, weight, experts[0].up_proj.weight], grad_out)
    for got, want in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("ratio", [0.0, 1e9])
def test_batched_and_per_expert_dispatch_agree(monkeypatch, ratio):
    """The padded-bmm path (ratio large) and the per-expert loop (ratio 0) compute the same sum and grads."""
    from model import moe
    from model.layers import SwiGLUMLP

    torch.manual_seed(0)
    experts = torch.nn.ModuleList(SwiGLUMLP(8, 6) for _ in range(4))
    x = torch.randn(10, 8, requires_grad=True)
    idx = torch.tensor([[0, 1]] * 7 + [[2, 0]] * 3)  # imbalanced: expert 3 idle, expert 0 busy
    w = torch.rand(10, 2)
    reference = torch.stack([sum(w[n, a] * experts[int(idx[n, a])](x[n]) for a in range(2)) for n in range(10)])
    monkeypatch.setattr(moe, "MAX_PADDING_RATIO", ratio)
    out = moe.dispatch_to_experts(x, idx, w, experts)
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    grads = torch.autograd.grad(out.square().sum(), [x, experts[0].gate_proj.weight])
    ref_grads = torch.autograd.grad(reference.square().sum(), [x, experts[0].gate_proj.weight])
    for g, r in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("ratio", [0.0, 1e9])
def test_idle_experts_get_zero_gradients_not_none(monkeypatch, ratio):
    """Every rank must reduce the same parameter set under ZeRO 1-3: an expert no token chose still gets a
    (zero) gradient on either dispatch path; without autograd the idle expert is skipped."""
    from model import moe

    torch.manual_seed(0)
    experts = torch.nn.ModuleList(SwiGLUMLP(8, 6) for _ in range(4))
    x = torch.randn(10, 8)
    idx = torch.tensor([[0, 1]] * 7 + [[2, 0]] * 3)  # expert 3 idle
    monkeypatch.setattr(moe, "MAX_PADDING_RATIO", ratio)
    moe.dispatch_to_experts(x, idx, torch.rand(10, 2), experts).sum().backward()
    for p in experts[3].parameters():
        assert p.grad is not None and not p.grad.any()
    assert all(p.grad is not None and p.grad.any() for p in experts[0].parameters())

    calls = []
    experts[3].register_forward_hook(lambda *_: calls.append(3))
    monkeypatch.setattr(moe, "MAX_PADDING_RATIO", 0.0)
    with torch.no_grad():
        moe.dispatch_to_experts(x, idx, torch.rand(10, 2), experts)
    assert calls == []


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_one_token_decode_dispatch_equals_the_general_path(dtype):
    """Without autograd one token runs its A experts directly; the sum equals the sorted dispatch's (which
    still runs while autograd is on) and only the chosen experts run."""
    from model import moe

    torch.manual_seed(0)
    experts = torch.nn.ModuleList(SwiGLUMLP(8, 6) for _ in range(5)).to(dtype)
    x = torch.randn(1, 8, dtype=dtype)
    idx, w = torch.tensor([[3, 1]]), torch.rand(1, 2)
    calls = []
    for e, expert in enumerate(experts):
        expert.register_forward_hook(lambda *_, e=e: calls.append(e))
    with torch.no_grad():
        fast = moe.dispatch_to_experts(x, idx, w, experts)
    assert sorted(calls) == [1, 3]
    general = moe.dispatch_to_experts(x, idx, w, experts).detach()  # autograd on: the sorted path
    assert fast.dtype == dtype and fast.shape == (1, 8)
    torch.testing.assert_close(fast, general, rtol=0, atol=0)


def test_router_statistics_are_computed_on_first_read_only():
    """Decoding never reads the routing statistics, so a forward builds none of them; reading them gives
    the counts of the selected experts (padding excluded) and the mean squared log-sum-exp."""
    from model.moe import Routing, collect_router_stats

    logits = torch.randn(3, 4)
    routing = Routing(torch.tensor([[0, 1], [1, 2], [3, 3]]), logits, torch.tensor([True, True, False]), 4)
    assert "tokens_per_expert" not in vars(routing) and "z_loss" not in vars(routing)
    torch.testing.assert_close(routing.tokens_per_expert, torch.tensor([1.0, 2.0, 1.0, 0.0]))
    torch.testing.assert_close(routing.z_loss, torch.logsumexp(logits[:2], dim=-1).square().mean())
    stats = collect_router_stats([routing, routing])
    assert stats.tokens_per_expert.shape == (2, 4)
    torch.testing.assert_close(stats.z_loss, 2 * routing.z_loss)
    assert collect_router_stats([]) is None
