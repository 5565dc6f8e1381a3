"""The three post-training phases of the instant "Ling" model (METHODS §5-6), each a function that
updates the model in place and reports per-step metrics through ``on_log``:

1. ``sft_phase``: SFT on shortest-correct responses (selection + pruning of verified candidates);
2. ``rl_phase``: synchronous on-policy RL with Evo-CoT rewards and the LPO loss (GRPO / GSPO selectable);
3. ``preference_phase``: bidirectional preference alignment (offset DPO) on verified on-policy pairs.

SFT rows and preference pairs are ``SFTExample`` / ``PreferencePair`` tables; a phase trains only on rows
that passed their contract (``training.post_train.contracts``).
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from configs import PipelineConfig
from data_contracts import IntakeResult, QuarantineLedger
from data_contracts.training_rows import PAIR_DTYPES, SFT_DTYPES
from training.post_train.common import phase_engine, response_batch, token_logps
from training.post_train.contracts import screen_pairs

OnLog = Callable[[str, int, Mapping[str, float]], None]


def sft_rows(
    candidates: pd.DataFrame, sft: pd.DataFrame, envs: Mapping[str, Any], tasks_by_id: Mapping[str, Any], mode: str
) -> tuple[pd.DataFrame, dict[str, float]]:
    """``SFTExample`` rows: the plain full-length SFT table, or shortest-correct selection + pruning."""
    if mode == "full":
        return sft, {"mean_response_chars": float(sft["response"].str.len().mean())}
    from training.objectives import select_shortest_correct

    # Curation verified every candidate already; only pruned variants need the verifier (and the sandbox).
    known = {(r.prompt_id, r.response): bool(r.correct) for r in candidates.itertuples()}

    def verify(prompt_id: str, text: str) -> bool:
        if (prompt_id, text) not in known:
            task = tasks_by_id[prompt_id]
            known[prompt_id, text] = envs[task.family].verify(task, text).correct
        return known[prompt_id, text]

    selected, stats = select_shortest_correct(
        ({"prompt_id": r.prompt_id, "text": r.response} for r in candidates.itertuples()), verify
    )
    by_response = {(r.prompt_id, r.response): r for r in candidates.itertuples()}
    rows = pd.DataFrame(
        [
            _sft_row(by_response[s["prompt_id"], s["original_text"]], s["text"], known[s["prompt_id"], s["text"]])
            for s in selected
        ],
        columns=list(SFT_DTYPES),
    )
    stats = {k: float(v) for k, v in stats.items()}
    stats["mean_response_chars"] = float(rows["n_chars"].sum()) / max(1, len(rows))
    stats["full_mean_response_chars"] = float(sft["response"].str.len().mean())
    return rows, stats


def _sft_row(candidate: Any, response: str, correct: bool) -> dict[str, Any]:
    """The candidate's metadata with the (possibly pruned) response and the verifier's verdict on it."""
    return {
        "prompt_id": candidate.prompt_id,
        "family": candidate.family,
        "difficulty": int(candidate.difficulty),
        "prompt": candidate.prompt,
        "response": response,
        "style": candidate.style,
        "correct": correct,
        "n_chars": len(response),
    }


def sft_phase(model, tokenizer, rows: pd.DataFrame, cfg: PipelineConfig, on_log: OnLog) -> dict[str, float]:
    from corpus.tokenizer import EOS, PAD
    from training.objectives import pack_examples, sft_loss

    p = cfg.post_train.sft
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False).ids  # noqa: E731
    ids_NT, mask_NT = pack_examples(
        [encode(text) for text in rows["prompt"]],
        [encode(text) for text in rows["response"]],
        p.seq_len,
        tokenizer.token_to_id(PAD),
        tokenizer.token_to_id(EOS),
    )
    engine = phase_engine(model, cfg.post_train.engine, p.optim, updates=p.steps)
    gen = torch.Generator().manual_seed(cfg.seed)
    last: dict[str, float] = {}
    for step in range(1, p.steps + 1):
        pick = torch.randint(0, ids_NT.shape[0], (p.batch_size,), generator=gen)
        out = engine(ids_NT[pick])
        loss, stats = sft_loss(out.logits, ids_NT[pick], mask_NT[pick])
        engine.backward(loss)
        result = engine.step()
        last = {
            "loss": float(loss.detach()),
            "token_accuracy": float(stats["accuracy"]),
            "grad_norm": float(result.grad_norm),
        }
        if step % p.log_every == 0 or step == p.steps:
            on_log("sft", step, last)
    return {"packed_rows": float(ids_NT.shape[0]), **last}


def _sample_groups(
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
    from corpus.tokenizer import EOS, PAD
    from inference.native import NativeEngine
    from inference.rollout import rollout
    from inference.sampling import SamplingParams

    engine = NativeEngine(model, tokenizer, eos_id=tokenizer.token_to_id(EOS), pad_id=tokenizer.token_to_id(PAD))
    grouped = [t for t in tasks for _ in range(samples)]
    params = SamplingParams(temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    return rollout(engine, envs, grouped, params, max_turns=max_turns)


def rl_phase(model, tokenizer, envs, tasks: Sequence[Any], cfg: PipelineConfig, on_log: OnLog) -> dict[str, float]:
    """Each step: G rollouts per prompt, verified and rewarded (Evo-CoT), group-normalised advantages,
    then ``updates_per_batch`` policy-loss updates on the batch (the first is on-policy, ratio 1; later
    ones are off by one update, which is where the per-level clipping acts)."""
    from corpus.tokenizer import PAD
    from training.objectives import (
        EvoCoTConfig,
        PolicyLossConfig,
        ScoredResponse,
        evo_cot_rewards,
        group_advantages,
        policy_loss,
    )

    p = cfg.post_train.rl
    reward_cfg = EvoCoTConfig(
        format_penalty=p.format_penalty,
        redundancy_coef=p.redundancy_coef,
        alpha_min=p.alpha_min,
        compression_coef=p.compression_coef,
        compression_threshold=p.compression_threshold,
    )
    loss_cfg = PolicyLossConfig(level=p.level, eps_low=p.clip_low, eps_high=p.clip_high)
    engine = phase_engine(model, cfg.post_train.engine, p.optim, updates=p.steps * p.updates_per_batch)
    rng = random.Random(cfg.seed)
    last: dict[str, float] = {}
    for step in range(1, p.steps + 1):
        batch_tasks = rng.sample(list(tasks), min(p.prompts_per_step, len(tasks)))
        rolls = _sample_groups(
            engine.module,
            tokenizer,
            envs,
            batch_tasks,
            samples=p.samples_per_prompt,
            temperature=p.temperature,
            max_new_tokens=p.max_new_tokens,
            seed=cfg.seed + step,
            max_turns=cfg.post_train.eval.max_tool_turns,
        )
        verdicts = [envs[r.task.family].verify(r.task, r.text) for r in rolls]
        rewards = []
        for g in range(len(batch_tasks)):
            sl = slice(g * p.samples_per_prompt, (g + 1) * p.samples_per_prompt)
            group = [
                ScoredResponse(text=r.text, correct=v.correct, format_ok=v.format_ok, length=r.model_tokens)
                for r, v in zip(rolls[sl], verdicts[sl], strict=True)
            ]
            r_G, _ = evo_cot_rewards(group, reward_cfg)
            rewards.append(r_G)
        rewards_NG = torch.stack(rewards)
        adv_B = group_advantages(rewards_NG).reshape(-1)
        correct = [v.correct for v in verdicts]
        lengths = [r.model_tokens for r in rolls]
        ids_BT, attn_BT, target_BT = response_batch(
            [r.prompt_ids for r in rolls],
            [r.response_ids for r in rolls],
            [r.response_mask for r in rolls],
            tokenizer.token_to_id(PAD),
        )
        units_BT = _unit_ids(tokenizer, rolls, target_BT.shape[1]) if p.level == "sentence" else None
        with torch.no_grad():
            logp_old_BT = token_logps(engine.module, ids_BT, attn_BT)
        rollout_logp = torch.tensor([lp for r in rolls for lp, m in zip(r.logprobs, r.response_mask, strict=True) if m])
        recomputed = logp_old_BT[target_BT.bool()]
        stats: dict[str, torch.Tensor] = {}
        for _ in range(p.updates_per_batch):
            logp_BT = token_logps(engine, ids_BT, attn_BT)
            loss, stats = policy_loss(logp_BT, logp_old_BT, adv_B, target_BT, units_BT, loss_cfg)
            engine.backward(loss)
            engine.step()
        last = {
            "reward": float(rewards_NG.mean()),
            "accuracy": sum(correct) / len(correct),
            "mean_response_tokens": sum(lengths) / len(lengths),
            "mean_correct_tokens": (sum(n for n, c in zip(lengths, correct, strict=True) if c) / max(1, sum(correct))),
            "clip_fraction": float(stats["clip_fraction"]),
            "ratio_max": float(stats["ratio_max"]),
            "loss": float(loss.detach()),
            "train_infer_abs_logp_diff": float((rollout_logp - recomputed).abs().mean()) if len(recomputed) else 0.0,
        }
        on_log("rl", step, last)
    return last


def _unit_ids(tokenizer, rolls: Sequence[Any], width: int) -> torch.Tensor:
    """Sentence units aligned with ``response_batch``'s target positions (prompt positions get -1)."""
    from training.objectives import batch_sentence_unit_ids

    units = batch_sentence_unit_ids(tokenizer, [r.response_ids for r in rolls], [r.response_mask for r in rolls])
    out_BT = torch.full((len(rolls), width), -1, dtype=torch.long)
    for b, r in enumerate(rolls):
        start = len(r.prompt_ids) - 1
        out_BT[b, start : start + len(r.response_ids)] = units[b, : len(r.response_ids)]
    return out_BT


def preference_phase(
    model, tokenizer, envs, tasks: Sequence[Any], cfg: PipelineConfig, on_log: OnLog, ledger: QuarantineLedger
) -> tuple[dict[str, float], IntakeResult]:
    """On-policy samples -> verified pairs (shortest correct vs worse) -> offset-DPO against the phase's
    starting policy as reference, with the bidirectional score gap as margin.

    Focal rubric weights (METHODS §6.4) follow the on-policy saturation of each rubric dimension: every step's
    samples update them before its pairs are scored, and they weight each pair's loss
    (``training.objectives.preference``), so a dimension the policy already satisfies stops pulling.

    Each step's pairs pass the ``PreferencePair`` contract before they are trained on; broken pairs go to
    ``ledger``. Returns the last step's metrics and the phase's pairs (kept and counted) as one table."""
    from corpus.tokenizer import PAD
    from training.objectives import FocalRubricWeights, PreferenceConfig, build_preference_pairs, focal_pair_weights

    p = cfg.post_train.preference
    loss_cfg = PreferenceConfig(
        beta=p.beta, margin_scale=p.margin_scale, focal_gamma=p.focal_gamma, focal_momentum=p.focal_momentum
    )
    focal = FocalRubricWeights(p.rubric_dims, loss_cfg)
    reference = copy.deepcopy(model).eval()
    engine = phase_engine(model, cfg.post_train.engine, p.optim, updates=p.steps)
    rng = random.Random(cfg.seed + 1)
    pad = tokenizer.token_to_id(PAD)
    last: dict[str, float] = {"pairs": 0.0}
    screened: list[IntakeResult] = []
    for step in range(1, p.steps + 1):
        batch_tasks = rng.sample(list(tasks), min(p.prompts_per_step, len(tasks)))
        rolls = _sample_groups(
            engine.module,
            tokenizer,
            envs,
            batch_tasks,
            samples=p.samples_per_prompt,
            temperature=p.temperature,
            max_new_tokens=p.max_new_tokens,
            seed=cfg.seed + 1000 + step,
            max_turns=cfg.post_train.eval.max_tool_turns,
        )
        by_text = {}
        rows = []
        for r in rolls:
            v = envs[r.task.family].verify(r.task, r.text)
            by_text[(r.task.task_id, r.text)] = r
            rows.append(
                {
                    "prompt_id": r.task.task_id,
                    "text": r.text,
                    "correct": v.correct,
                    "format_ok": v.format_ok,
                    "length": r.model_tokens,
                }
            )
        verified = {(row["prompt_id"], row["text"]): row["correct"] for row in rows}
        weights_D = focal.update(_rubric_scores(rows, p.rubric_dims))
        focal_log = {f"focal_weight_{dim}": float(w) for dim, w in zip(p.rubric_dims, weights_D, strict=True)}
        pairs = build_preference_pairs(
            rows, dims=p.rubric_dims, weights_D=weights_D, max_pairs_per_prompt=p.max_pairs_per_prompt
        )
        table = _pair_table(pairs, by_text, verified, step)
        result = screen_pairs(table, ledger, cfg, tokenizer)
        screened.append(result)
        kept = result.kept
        if kept.empty:
            on_log("preference", step, {"pairs": 0.0, "pairs_quarantined": float(result.rows_quarantined), **focal_log})
            continue
        kind_of = dict(zip(table["pair_id"], (pp.kind for pp in pairs), strict=True))
        weight_P = focal_pair_weights([kind_of[i] for i in kept["pair_id"]], p.rubric_dims, weights_D)
        loss, stats = pair_loss(
            engine,
            reference,
            [by_text[key] for key in zip(kept["prompt_id"], kept["chosen"], strict=True)],
            [by_text[key] for key in zip(kept["prompt_id"], kept["rejected"], strict=True)],
            torch.tensor(kept["chosen_reward"].to_numpy(), dtype=torch.float32),
            torch.tensor(kept["rejected_reward"].to_numpy(), dtype=torch.float32),
            weight_P,
            loss_cfg,
            pad,
        )
        engine.backward(loss)
        engine.step()
        last = {
            "loss": float(loss.detach()),
            "pairs": float(len(kept)),
            "pairs_quarantined": float(result.rows_quarantined),
            "pair_weight_mean": float(weight_P.mean()),
            **focal_log,
            **{k: float(v) for k, v in stats.items() if v.numel() == 1},
        }
        on_log("preference", step, last)
    return last, IntakeResult.concat("preference_pairs", screened)


def _rubric_scores(rows: Sequence[Mapping[str, Any]], dims: Sequence[str]) -> torch.Tensor:
    """Rubric scores [N, D] of one step's samples, each prompt's group scored on its own (the ``concise``
    dimension is a position within the group)."""
    from training.objectives import rubric_matrix

    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["prompt_id"], []).append(row)
    return torch.cat([rubric_matrix(group, dims) for group in groups.values()])


def pair_loss(
    policy,
    reference,
    chosen: Sequence[Any],
    rejected: Sequence[Any],
    score_chosen_P: torch.Tensor,
    score_rejected_P: torch.Tensor,
    weight_P: torch.Tensor,
    loss_cfg: Any,
    pad_id: int,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The preference phase's loss on P pairs of rollouts (``prompt_ids``, ``response_ids``,
    ``response_mask``): offset DPO of ``policy`` against ``reference``, pair p weighted by ``weight_P[p]``."""
    from training.objectives import preference_loss

    c_ids, c_attn, c_mask = response_batch(
        [r.prompt_ids for r in chosen], [r.response_ids for r in chosen], [r.response_mask for r in chosen], pad_id
    )
    r_ids, r_attn, r_mask = response_batch(
        [r.prompt_ids for r in rejected],
        [r.response_ids for r in rejected],
        [r.response_mask for r in rejected],
        pad_id,
    )
    with torch.no_grad():
        ref_c, ref_r = token_logps(reference, c_ids, c_attn), token_logps(reference, r_ids, r_attn)
    return preference_loss(
        token_logps(policy, c_ids, c_attn),
        token_logps(policy, r_ids, r_attn),
        ref_c,
        ref_r,
        c_mask,
        r_mask,
        score_chosen_P,
        score_rejected_P,
        loss_cfg,
        weight_P=weight_P,
    )


def _pair_table(
    pairs: Sequence[Any], by_text: Mapping[tuple[str, str], Any], verified: Mapping[tuple[str, str], bool], step: int
) -> pd.DataFrame:
    """One step's pairs as ``PreferencePair`` rows; the chosen side's verdict is the verified label."""
    rows = []
    for i, pp in enumerate(pairs):
        task = by_text[pp.prompt_id, pp.chosen].task
        rows.append(
            {
                "pair_id": f"{pp.prompt_id}@{step}#{i}",
                "prompt_id": pp.prompt_id,
                "family": task.family,
                "prompt": task.prompt,
                "chosen": pp.chosen,
                "rejected": pp.rejected,
                "chosen_reward": pp.chosen_score,
                "rejected_reward": pp.rejected_score,
                "chosen_verified": verified[pp.prompt_id, pp.chosen],
            }
        )
    return pd.DataFrame(rows, columns=list(PAIR_DTYPES))
