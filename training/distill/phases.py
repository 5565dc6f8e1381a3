"""The two training phases of specialist -> unified distillation, each updating the student in place and
reporting per-step metrics through ``on_log``:

1. ``logit_phase``: forward KL from each teacher's top-k log-probs on its verified samples to the student
   (``topk_forward_kl``), mini-batches drawn with replacement from the contracted teacher table;
2. ``on_policy_phase``: the student samples the routed prompts, the teacher of each prompt's family scores
   the student's tokens, and the per-token reverse KL is the loss (``on_policy_reverse_kl``).

Shape legend: B rows, T time.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from configs.distill import DistillConfig
from configs.training import OptimConfig

OnLog = Callable[[str, int, Mapping[str, float]], None]


def phase_engine(model: torch.nn.Module, cfg: DistillConfig, *, lr: float, steps: int):
    """A fresh optimizer for one phase (constant LR after a short warmup), on the configured backend."""
    from training.builder import build_engine

    optim = dataclasses.replace(OptimConfig(), lr=lr, warmup_steps=max(1, steps // 10), weight_decay=0.0)
    return build_engine(model, cfg.engine, optim, total_steps=max(1, steps))


def _floats(stats: Mapping[str, torch.Tensor]) -> dict[str, float]:
    return {k: float(v) for k, v in stats.items()}


def logit_phase(model, samples: pd.DataFrame, pad_id: int, cfg: DistillConfig, seed: int, on_log: OnLog):
    """``cfg.logit.steps`` updates on batches of ``cfg.logit.batch_size`` teacher samples; last step's metrics."""
    from training.distill.batches import teacher_batch
    from training.objectives.distill_kl import topk_forward_kl

    p = cfg.logit
    rows = samples.to_dict("records")
    engine = phase_engine(model, cfg, lr=p.lr, steps=p.steps)
    gen = torch.Generator().manual_seed(seed)
    last: dict[str, float] = {}
    for step in range(1, p.steps + 1):
        pick = torch.randint(0, len(rows), (p.batch_size,), generator=gen).tolist()
        ids_BT, attn_BT, target_BT, topk_ids, topk_logp = teacher_batch([rows[i] for i in pick], pad_id, cfg.top_k)
        logits_BTV = engine(ids_BT, attention_mask=attn_BT).logits[:, :-1]
        loss, stats = topk_forward_kl(logits_BTV, topk_ids, topk_logp, target_BT)
        engine.backward(loss)
        result = engine.step()
        last = {"loss": float(loss.detach()), "grad_norm": float(result.grad_norm), **_floats(stats)}
        if step % 5 == 0 or step == p.steps:
            on_log("logit", step, last)
    return last


def _student_rollouts(model, tokenizer, envs, tasks: Sequence[Any], cfg: DistillConfig, seed: int) -> list[Any]:
    from corpus.tokenizer import EOS, PAD
    from inference.native import NativeEngine
    from inference.rollout import rollout
    from inference.sampling import SamplingParams

    p = cfg.on_policy
    engine = NativeEngine(model, tokenizer, eos_id=tokenizer.token_to_id(EOS), pad_id=tokenizer.token_to_id(PAD))
    grouped = [t for t in tasks for _ in range(p.samples_per_prompt)]
    # Temperature 1: the reverse-KL estimate needs tokens drawn from the student's own distribution.
    params = SamplingParams(temperature=1.0, max_new_tokens=p.max_new_tokens, seed=seed)
    return rollout(engine, envs, grouped, params, max_turns=cfg.sampling.max_tool_turns)


@torch.no_grad()
def teacher_logps(
    rolls: Sequence[Any], teacher_of: Mapping[str, Any], ids_BT: torch.Tensor, attn_BT: torch.Tensor
) -> torch.Tensor:
    """log pi_T of every next token [B, T-1], each row scored by the teacher of its task's family."""
    from training.post_train.common import token_logps

    out_BT = torch.zeros(ids_BT.shape[0], ids_BT.shape[1] - 1)
    by_model: dict[int, list[int]] = {}
    for b, r in enumerate(rolls):
        by_model.setdefault(id(teacher_of[r.task.family].model), []).append(b)
    models = {id(t.model): t.model for t in teacher_of.values()}
    for key, rows in by_model.items():
        out_BT[rows] = token_logps(models[key], ids_BT[rows], attn_BT[rows])
    return out_BT


def on_policy_phase(
    model, tokenizer, envs, tasks: Sequence[Any], teacher_of: Mapping[str, Any], cfg: DistillConfig, seed: int, on_log
) -> dict[str, float]:
    """``cfg.on_policy.steps`` steps of: student rollouts on routed prompts, teacher scores, one update."""
    from corpus.tokenizer import EOS, PAD
    from training.distill.batches import with_stop
    from training.objectives.distill_kl import on_policy_reverse_kl
    from training.post_train.common import response_batch, token_logps

    p = cfg.on_policy
    engine = phase_engine(model, cfg, lr=p.lr, steps=p.steps)
    rng = random.Random(seed)
    last: dict[str, float] = {}
    for step in range(1, p.steps + 1):
        batch_tasks = rng.sample(list(tasks), min(p.prompts_per_step, len(tasks)))
        rolls = _student_rollouts(engine.module, tokenizer, envs, batch_tasks, cfg, seed + step)
        rolls = [r for r in rolls if r.response_ids]
        if not rolls:
            on_log("on_policy", step, {"rollouts": 0.0})
            continue
        correct = [envs[r.task.family].verify(r.task, r.text).correct for r in rolls]
        # The EOS a rollout ended on is an action too: the teacher scores the student's decision to stop.
        responses = [with_stop(r, tokenizer.token_to_id(EOS)) for r in rolls]
        ids_BT, attn_BT, target_BT = response_batch(
            [r.prompt_ids for r in rolls],
            [ids for ids, _ in responses],
            [mask for _, mask in responses],
            tokenizer.token_to_id(PAD),
        )
        logp_T_BT = teacher_logps(rolls, teacher_of, ids_BT, attn_BT)
        # The behaviour policy recomputed in this batch's layout: ratio exactly 1 on the update below.
        with torch.no_grad():
            logp_behav_BT = token_logps(engine.module, ids_BT, attn_BT)
        logp_S_BT = token_logps(engine, ids_BT, attn_BT)
        loss, stats = on_policy_reverse_kl(logp_S_BT, logp_behav_BT, logp_T_BT, target_BT)
        engine.backward(loss)
        result = engine.step()
        lengths = [r.model_tokens for r in rolls]
        last = {
            "loss": float(loss.detach()),
            "grad_norm": float(result.grad_norm),
            "rollouts": float(len(rolls)),
            "accuracy": sum(correct) / len(correct),
            "mean_response_tokens": sum(lengths) / len(lengths),
            **_floats(stats),
        }
        on_log("on_policy", step, last)
    return last
