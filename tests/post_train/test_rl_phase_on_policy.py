"""Post-training's RL phase: the first of ``updates_per_batch`` policy-loss updates of every step is
on-policy. ``logp_old`` is taken without gradient from ``engine.module`` and the first update's log-probs
through the engine with gradient, at the same weights: they must be the same bits, so every unit ratio is
exactly 1 and nothing is clipped, at each level (LPO sentence units, GRPO tokens, GSPO sequences). The
phase runs as the tiny profile runs it (DeepSpeed ZeRO-0 engine, the migrated hybrid as the policy); only
the sampling is scripted, so the responses, their verdicts and hence non-zero advantages are known. The
second update is off by one optimizer step, and its ratios show the spy sees real drift."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch

import inference.rollout
import training.objectives
from configs import resolve
from inference.rollout import Rollout
from model import HybridForCausalLM
from training.post_train import phases

# One prompt's samples: right and short, right with a second sentence, wrong, unformatted.
RESPONSES = [("Answer: 2", True, True), ("1+1=2. So:\nAnswer: 2", True, True), ("Answer: 3", False, True)]
RESPONSES += [("two", False, False)]


class ByteTokenizer:
    """Enough of a tokenizer for the phase: token ids are bytes + 1, the pad id is 0."""

    def encode(self, text, add_special_tokens=False):
        return SimpleNamespace(ids=[b + 1 for b in text.encode()])

    def decode(self, ids, skip_special_tokens=True):
        return bytes(i - 1 for i in ids if i > 0).decode(errors="replace")

    def token_to_id(self, token):
        return 0


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def scripted_rollout(engine, envs, tasks, params, *, max_turns=4):
    """Stands in for ``inference.rollout.rollout`` (the phase samples G consecutive copies of each task):
    copy i of a task gets scripted response i."""
    tokenizer = ByteTokenizer()
    rolls = []
    for i, task in enumerate(tasks):
        text = RESPONSES[i % len(RESPONSES)][0]
        ids = tokenizer.encode(text).ids
        rolls.append(
            Rollout(
                task=task,
                prompt_ids=tokenizer.encode(task.prompt).ids,
                response_ids=ids,
                response_mask=[1] * len(ids),
                logprobs=[-1.0] * len(ids),
                text=text,
                finish_reason="eos",
            )
        )
    return rolls


@pytest.mark.parametrize("level", ["sentence", "token", "sequence"])
def test_first_update_of_each_rl_step_has_ratio_one(monkeypatch, one_thread, level):
    verdicts = {text: SimpleNamespace(correct=c, format_ok=f) for text, c, f in RESPONSES}
    envs = {"math": SimpleNamespace(verify=lambda task, text: verdicts[text])}
    tasks = [SimpleNamespace(task_id=f"t{i}", family="math", prompt=f"{i}+{2 - i}=?") for i in range(2)]
    # The phase imports rollout from inference.rollout when it samples: the script is what it gets.
    monkeypatch.setattr(inference.rollout, "rollout", scripted_rollout)
    calls = []
    real = training.objectives.policy_loss

    def spy(logp_BT, logp_old_BT, advantages_B, mask_BT, *args, **kwargs):
        loss, stats = real(logp_BT, logp_old_BT, advantages_B, mask_BT, *args, **kwargs)
        calls.append((logp_BT.detach().clone(), logp_old_BT.clone(), mask_BT.bool(), advantages_B.clone(), stats))
        return loss, stats

    # rl_phase imports policy_loss from training.objectives when it runs: the spy is what it gets.
    monkeypatch.setattr(training.objectives, "policy_loss", spy)
    cfg = resolve(
        "tiny_cpu",
        {
            "lineage.dvc": False,
            "post_train.rl.steps": 2,
            "post_train.rl.prompts_per_step": 2,
            "post_train.rl.samples_per_prompt": len(RESPONSES),
            "post_train.rl.level": level,
        },
    )
    p = cfg.post_train.rl
    assert cfg.post_train.engine.backend == "deepspeed" and p.updates_per_batch >= 2
    torch.manual_seed(0)
    policy = HybridForCausalLM(dataclasses.replace(cfg.model, initializer_range=0.08))
    logs = []
    phases.rl_phase(policy, ByteTokenizer(), envs, tasks, cfg, lambda *a: logs.append(a))

    assert len(calls) == p.steps * p.updates_per_batch
    for step in range(p.steps):
        first, second = calls[step * p.updates_per_batch : (step + 1) * p.updates_per_batch][:2]
        logp, logp_old, mask, advantages, stats = first
        assert bool(advantages.abs().max() > 0.1), "all-zero advantages would make the control meaningless"
        # Bit-equal on every model token: the ratio is exp(0), not exp(round-off).
        assert torch.equal(logp[mask], logp_old[mask]), f"step {step + 1}: first update is not on-policy"
        assert stats["ratio_mean"].item() == 1.0 and stats["ratio_max"].item() == 1.0
        assert stats["clip_fraction"].item() == 0.0 and stats["approx_kl"].item() == 0.0
        # Control: one optimizer step later the policy has moved and the ratio sees it; logp_old stays put.
        later_logp, later_old, _, _, later_stats = second
        assert torch.equal(later_old, logp_old)
        assert not torch.equal(later_logp[mask], logp_old[mask]) and later_stats["logp_abs_diff"].item() > 0
    assert [(phase, step) for phase, step, _ in logs] == [("rl", 1), ("rl", 2)]
