"""The KPop RL trainer's first update of every step is on-policy with respect to π_prox: the proximal
log-probs (no-grad pass at the weights before the step) and the first update's log-probs (gradient pass at
the same weights) are the same bits, so every importance ratio is exactly 1 and nothing is clipped. The
stage's own policy (the tiny hybrid: Lightning attention + MLA + MoE) runs here, because a kernel that
chose another path with gradients on would break exactly this; the second update is off by one optimizer
step, and its ratios show the spy sees real drift."""

import dataclasses

import pytest
import torch

from configs import resolve
from environments import Task
from model import HybridForCausalLM
from training.objectives.policy_gradient import PolicyLossConfig
from training.rl import trainer as trainer_module
from training.rl.records import RolloutGroup, RolloutRecord
from training.rl.run import correction_config
from training.rl.trainer import DecoupledPPOTrainer

PAD = 0
GROUPS, SAMPLES = 2, 4


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@torch.no_grad()
def behaviour_logps(policy, prompt: list[int], response: list[int], mask: list[int], gen) -> list[float]:
    """The policy's own log-probs of the response, each off by up to 0.02 nats (as a bf16 rollout engine's
    are), 0 on observations: the correction keeps the tokens and has something to weigh."""
    ids = torch.tensor([prompt + response])
    logp = trainer_module.token_logps(policy(ids).logits, ids)[0, len(prompt) - 1 :]
    noise = (torch.rand(len(response), generator=gen) - 0.5) * 0.04
    return [float(lp + e) * m for lp, e, m in zip(logp, noise, mask, strict=True)]


def groups(policy, vocab: int, version: int, seed: int) -> list[RolloutGroup]:
    """G samples of two prompts with rewards that differ inside each group (non-zero advantages) and a tool
    observation in the middle of one response."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for p in range(GROUPS):
        prompt = torch.randint(1, vocab, (5 + p,), generator=gen).tolist()
        records = []
        for s in range(SAMPLES):
            n = 6 + s
            mask = [1] * n
            if s == 1:
                mask[2:4] = [0, 0]  # an environment observation: not a target of the loss
            response = torch.randint(1, vocab, (n,), generator=gen).tolist()
            records.append(
                RolloutRecord(
                    prompt_index=p,
                    sample=s,
                    task_id=f"t{p}",
                    family="code",
                    prompt_ids=prompt,
                    response_ids=response,
                    response_mask=mask,
                    logprobs=behaviour_logps(policy, prompt, response, mask, gen),
                    versions=[version] * n,
                    stage="done",
                    reward=float(s % 2) + 0.1 * s,
                )
            )
        task = Task(task_id=f"t{p}", family="code", prompt="", answer="", difficulty=1, payload="")
        out.append(RolloutGroup(prompt_index=p, task=task, records=records, admitted_version=version))
    return out


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_first_update_of_each_step_has_ratio_one(monkeypatch, one_thread, level):
    cfg = resolve("tiny_cpu", {"lineage.dvc": False, "kpop_rl.loss_level": level})
    rl = cfg.kpop_rl
    assert rl.updates_per_step >= 2, "the second update is the control that the spy sees drift"
    torch.manual_seed(0)
    policy = HybridForCausalLM(dataclasses.replace(cfg.model, initializer_range=0.08))
    calls = []
    real = trainer_module.decoupled_policy_loss

    def spy(logp_BT, logp_prox_BT, logp_behav_BT, advantages_B, mask_BT, *args, **kwargs):
        loss, stats = real(logp_BT, logp_prox_BT, logp_behav_BT, advantages_B, mask_BT, *args, **kwargs)
        calls.append((logp_BT.detach().clone(), logp_prox_BT.clone(), mask_BT.clone(), advantages_B.clone(), stats))
        return loss, stats

    monkeypatch.setattr(trainer_module, "decoupled_policy_loss", spy)
    # As training.rl.run builds it: AdamW on the policy, the stage's loss config and KPop correction.
    trainer = DecoupledPPOTrainer(
        policy,
        torch.optim.AdamW(policy.parameters(), lr=rl.lr, betas=rl.betas, weight_decay=rl.weight_decay),
        forward=lambda ids_BT, attn_BT: policy(ids_BT, attention_mask=attn_BT).logits,
        pad_id=PAD,
        loss_cfg=PolicyLossConfig(level=rl.loss_level, eps_low=rl.clip_low, eps_high=rl.clip_high),
        correction=correction_config(rl),
        updates_per_step=rl.updates_per_step,
        max_grad_norm=rl.max_grad_norm,
    )
    for version in (0, 1):
        calls.clear()
        out = trainer.train_step(groups(policy, cfg.model.vocab_size, version, seed=version), version=version)
        assert len(calls) == rl.updates_per_step
        logp, logp_prox, mask, advantages, stats = calls[0]
        assert bool(advantages.abs().max() > 0.1), "all-zero advantages would make the control meaningless"
        # Bit-equal on every model token: the ratio is exp(0), not exp(round-off).
        assert torch.equal(logp[mask], logp_prox[mask])
        assert stats["ratio_mean"].item() == 1.0 and stats["ratio_max"].item() == 1.0
        assert stats["clip_fraction"].item() == 0.0 and stats["approx_kl"].item() == 0.0
        assert out["first_update_ratio_mean"] == 1.0
        # Control: after one optimizer step the policy has moved, and the ratio sees it.
        later_logp, later_prox, _, _, later_stats = calls[1]
        assert torch.equal(later_prox, logp_prox)  # π_prox stays the step's starting point
        assert not torch.equal(later_logp[mask], logp_prox[mask])
        assert later_stats["logp_abs_diff"].item() > 0
