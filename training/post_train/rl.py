"""Synchronous on-policy RL with Evo-CoT rewards and the LPO loss (GRPO / GSPO selectable), METHODS §5-6.

The phase's updates run through ``training.loop.train``: ``RLBatches`` is the loop's batch source. Every
``updates_per_batch`` updates it samples the next step's rollouts from the current policy, rewards them and
builds the batch (on the model's device) that those updates train on. Sampling is seeded per step
(``seed + step``) and the prompt draw comes from a seeded ``random.Random`` whose state a checkpoint keeps,
so a resumed phase samples exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from configs import PipelineConfig
from training.post_train.common import phase_engine, phase_loop, response_batch, run_phase, token_logps

OnLog = Callable[[str, int, Mapping[str, float]], None]
# What the phase reports of the loop's metrics for each RL step: the last update's values.
UPDATE_KEYS = ("clip_fraction", "ratio_max", "loss")


def sample_groups(
    model,
    tokenizer,
    envs,
    tasks: Sequence[Any],
    *,
    samples: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    max_turns: int,
) -> list[Any]:
    """``samples`` rollouts of each task, consecutive per task, from ``model`` with a fixed sampling seed."""
    from corpus.tokenizer import EOS, PAD
    from inference.native import NativeEngine
    from inference.rollout import rollout
    from inference.sampling import SamplingParams

    engine = NativeEngine(model, tokenizer, eos_id=tokenizer.token_to_id(EOS), pad_id=tokenizer.token_to_id(PAD))
    grouped = [t for t in tasks for _ in range(samples)]
    params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    return rollout(engine, envs, grouped, params, max_turns=max_turns)


class RLBatches:
    """The RL phase's batch source for the shared loop. A checkpoint falls only between RL steps (the loop
    checkpoints every ``checkpoint_every * updates_per_batch`` updates), so its state is the step count, the
    prompt draw's RNG and the last step's rollout statistics (which the phase reports); the batch itself,
    fully consumed by then, is never saved."""

    def __init__(self, engine, tokenizer, envs, tasks: Sequence[Any], cfg: PipelineConfig) -> None:
        from training.objectives import EvoCoTConfig

        self.engine, self.tokenizer, self.envs, self.tasks, self.cfg = engine, tokenizer, envs, list(tasks), cfg
        p = cfg.post_train.rl
        self.p = p
        self.reward_cfg = EvoCoTConfig(
            format_penalty=p.format_penalty,
            redundancy_coef=p.redundancy_coef,
            alpha_min=p.alpha_min,
            compression_coef=p.compression_coef,
            compression_threshold=p.compression_threshold,
        )
        self.rng = random.Random(cfg.seed)
        self.step = 0  # RL steps sampled so far
        self.batch: dict[str, Any] | None = None
        self.used = 0  # updates taken on ``batch``
        self.rollout_stats: dict[str, float] = {}

    def __iter__(self) -> RLBatches:
        return self

    def __next__(self) -> dict[str, Any]:
        if self.batch is None or self.used == self.p.updates_per_batch:
            if self.step == self.p.steps:
                raise StopIteration
            self.batch, self.used = self._sample(), 0
        self.used += 1
        return self.batch

    def state_dict(self) -> dict[str, Any]:
        if self.batch is not None and self.used != self.p.updates_per_batch:
            raise RuntimeError(f"RL checkpoint inside step {self.step}: {self.used} of its updates taken")
        return {"step": self.step, "rng": self.rng.getstate(), "rollout_stats": dict(self.rollout_stats)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step, self.batch, self.used = state["step"], None, 0
        self.rng.setstate(state["rng"])
        self.rollout_stats = dict(state["rollout_stats"])

    def _sample(self) -> dict[str, Any]:
        """Step ``step + 1``: G rollouts per prompt, verified and rewarded (Evo-CoT), group-normalised
        advantages, the old policy's log-probs; everything the updates read is on the model's device."""
        from corpus.tokenizer import PAD
        from training.objectives import ScoredResponse, evo_cot_rewards, group_advantages

        p, envs, device = self.p, self.envs, self.engine.device
        self.step += 1
        batch_tasks = self.rng.sample(self.tasks, min(p.prompts_per_step, len(self.tasks)))
        rolls = sample_groups(
            self.engine.module,
            self.tokenizer,
            envs,
            batch_tasks,
            samples=p.samples_per_prompt,
            temperature=p.temperature,
            max_new_tokens=p.max_new_tokens,
            seed=self.cfg.seed + self.step,
            max_turns=self.cfg.post_train.eval.max_tool_turns,
        )
        verdicts = [envs[r.task.family].verify(r.task, r.text) for r in rolls]
        rewards = []
        for g in range(len(batch_tasks)):
            sl = slice(g * p.samples_per_prompt, (g + 1) * p.samples_per_prompt)
            group = [
                ScoredResponse(text=r.text, correct=v.correct, format_ok=v.format_ok, length=r.model_tokens)
                for r, v in zip(rolls[sl], verdicts[sl], strict=True)
            ]
            r_G, _ = evo_cot_rewards(group, self.reward_cfg)
            rewards.append(r_G)
        rewards_NG = torch.stack(rewards)
        adv_B = group_advantages(rewards_NG).reshape(-1).to(device)
        ids_BT, attn_BT, target_BT = response_batch(
            [r.prompt_ids for r in rolls],
            [r.response_ids for r in rolls],
            [r.response_mask for r in rolls],
            self.tokenizer.token_to_id(PAD),
            device=device,
        )
        units_BT = unit_ids(self.tokenizer, rolls, target_BT.shape[1]).to(device) if p.level == "sentence" else None
        with torch.no_grad():
            logp_old_BT = token_logps(self.engine.module, ids_BT, attn_BT)
        rollout_logp = torch.tensor(
            [lp for r in rolls for lp, m in zip(r.logprobs, r.response_mask, strict=True) if m], device=device
        )
        recomputed = logp_old_BT[target_BT.bool()]
        correct = [v.correct for v in verdicts]
        lengths = [r.model_tokens for r in rolls]
        self.rollout_stats = {
            "reward": float(rewards_NG.mean()),
            "accuracy": sum(correct) / len(correct),
            "mean_response_tokens": sum(lengths) / len(lengths),
            "mean_correct_tokens": (sum(n for n, c in zip(lengths, correct, strict=True) if c) / max(1, sum(correct))),
            "train_infer_abs_logp_diff": float((rollout_logp - recomputed).abs().mean()) if len(recomputed) else 0.0,
        }
        return {
            "ids": ids_BT,
            "attn": attn_BT,
            "target": target_BT,
            "units": units_BT,
            "logp_old": logp_old_BT,
            "adv": adv_B,
        }


def unit_ids(tokenizer, rolls: Sequence[Any], width: int) -> torch.Tensor:
    """Sentence units aligned with ``response_batch``'s target positions (prompt positions get -1)."""
    from training.objectives import batch_sentence_unit_ids

    units = batch_sentence_unit_ids(tokenizer, [r.response_ids for r in rolls], [r.response_mask for r in rolls])
    out_BT = torch.full((len(rolls), width), -1, dtype=torch.long)
    for b, r in enumerate(rolls):
        start = len(r.prompt_ids) - 1
        out_BT[b, start : start + len(r.response_ids)] = units[b, : len(r.response_ids)]
    return out_BT


def rl_phase(
    model,
    tokenizer,
    envs,
    tasks: Sequence[Any],
    cfg: PipelineConfig,
    on_log: OnLog,
    *,
    checkpoint_dir: Path | None = None,
) -> dict[str, float]:
    """Each step: G rollouts per prompt, verified and rewarded (Evo-CoT), group-normalised advantages,
    then ``updates_per_batch`` policy-loss updates on the batch (the first is on-policy, ratio 1; later
    ones are off by one update, which is where the per-level clipping acts). Trains ``model`` in place,
    resuming from the newest checkpoint in ``checkpoint_dir``; logs after every step."""
    from training.objectives import PolicyLossConfig, policy_loss

    p = cfg.post_train.rl
    if not p.steps:
        return {}
    loss_cfg = PolicyLossConfig(level=p.level, eps_low=p.clip_low, eps_high=p.clip_high)
    updates = p.steps * p.updates_per_batch
    engine = phase_engine(model, cfg.post_train.engine, p.optim, updates=updates)
    batches = RLBatches(engine, tokenizer, envs, tasks, cfg)

    def loss_fn(eng, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logp_BT = token_logps(eng, batch["ids"], batch["attn"])
        loss, stats = policy_loss(logp_BT, batch["logp_old"], batch["adv"], batch["target"], batch["units"], loss_cfg)
        return loss, {"clip_fraction": stats["clip_fraction"], "ratio_max": stats["ratio_max"]}

    def reported(metrics: Mapping[str, float]) -> dict[str, float]:
        stats = batches.rollout_stats
        head = {k: stats[k] for k in ("reward", "accuracy", "mean_response_tokens", "mean_correct_tokens")}
        return {
            **head,
            **{k: float(metrics[k]) for k in UPDATE_KEYS},
            "train_infer_abs_logp_diff": stats["train_infer_abs_logp_diff"],
        }

    def on_update(update: int, metrics: Mapping[str, float]) -> None:
        if update % p.updates_per_batch == 0:
            on_log("rl", update // p.updates_per_batch, reported(metrics))

    loop = phase_loop(
        updates=updates,
        batch_size=p.prompts_per_step * p.samples_per_prompt,
        seq_len=p.max_new_tokens,
        checkpoint_every=p.checkpoint_every * p.updates_per_batch,
        keep=cfg.post_train.keep_checkpoints,
    )
    result = run_phase(engine, batches, loss_fn, loop, checkpoint_dir, on_update)
    return reported(result.metrics)
