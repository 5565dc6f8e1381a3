"""Bidirectional preference alignment (offset DPO) on verified on-policy pairs, METHODS §6.4.

The phase's updates run through ``training.loop.train``: ``PreferenceBatches`` is the loop's batch source.
Each preference step samples from the current policy (seeded per step), verifies, updates the focal rubric
weights, builds and screens pairs; a step that keeps no pair trains on nothing and the source moves on to the
next, so the source decides the number of updates and may end before the loop's ``max_steps`` (the phase's
steps, which also size the schedule). A checkpoint keeps the step count, the prompt draw's RNG, the focal
saturation and every step's pair table: on resume the tables are screened again, which rebuilds the same
quarantine rows and counts, so a resumed phase reports what an uninterrupted one does.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from configs import PipelineConfig
from data_contracts import IntakeResult, QuarantineLedger
from data_contracts.training_rows import PAIR_DTYPES
from training.post_train import rl
from training.post_train.common import engine_device, phase_engine, phase_loop, response_batch, run_phase, token_logps
from training.post_train.contracts import screen_pairs

OnLog = Callable[[str, int, Mapping[str, float]], None]
# Loop metrics that are the loop's bookkeeping, not the loss's statistics.
_LOOP_KEYS = ("loss", "grad_norm", "lr", "tokens_per_s", "tokens")


class PreferenceBatches:
    """The preference phase's batch source for the shared loop (see the module docstring)."""

    def __init__(self, engine, tokenizer, envs, tasks: Sequence[Any], cfg: PipelineConfig, on_log: OnLog, ledger):
        from training.objectives import FocalRubricWeights, PreferenceConfig

        self.engine, self.tokenizer, self.envs, self.tasks, self.cfg = engine, tokenizer, envs, list(tasks), cfg
        self.on_log, self.ledger = on_log, ledger
        p = self.p = cfg.post_train.preference
        self.loss_cfg = PreferenceConfig(
            beta=p.beta, margin_scale=p.margin_scale, focal_gamma=p.focal_gamma, focal_momentum=p.focal_momentum
        )
        self.focal = FocalRubricWeights(p.rubric_dims, self.loss_cfg)
        self.rng = random.Random(cfg.seed + 1)
        self.step = 0  # preference steps taken (with or without pairs)
        self.tables: list[list[dict[str, Any]]] = []  # every step's pair table, as plain records
        self.screened: list[IntakeResult] = []
        self.batch_log: dict[str, float] = {"pairs": 0.0}  # what the last trained step reports besides the loss

    def __iter__(self) -> PreferenceBatches:
        return self

    def __next__(self) -> dict[str, Any]:
        while self.step < self.p.steps:
            batch = self._next_step()
            if batch is not None:
                return batch
        raise StopIteration

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "rng": self.rng.getstate(),
            "focal": self.focal.state_dict(),
            "tables": self.tables,
            "batch_log": dict(self.batch_log),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.step = state["step"]
        self.rng.setstate(state["rng"])
        self.focal.load_state_dict(state["focal"])
        self.batch_log = dict(state["batch_log"])
        self.tables = [list(records) for records in state["tables"]]
        # Screening is deterministic: the same tables give the same kept pairs, counts and quarantine rows.
        self.screened = [self._screen(records) for records in self.tables]

    def _screen(self, records: list[dict[str, Any]]) -> IntakeResult:
        table = pd.DataFrame(records, columns=list(PAIR_DTYPES))
        return screen_pairs(table, self.ledger, self.cfg, self.tokenizer)

    def _next_step(self) -> dict[str, Any] | None:
        """One preference step: its batch, or None (after logging the step) when it kept no pair."""
        from training.objectives import build_preference_pairs, focal_pair_weights

        p, envs = self.p, self.envs
        self.step += 1
        batch_tasks = self.rng.sample(self.tasks, min(p.prompts_per_step, len(self.tasks)))
        rolls = rl.sample_groups(
            self.engine.module,
            self.tokenizer,
            envs,
            batch_tasks,
            samples=p.samples_per_prompt,
            temperature=p.temperature,
            max_new_tokens=p.max_new_tokens,
            seed=self.cfg.seed + 1000 + self.step,
            max_turns=self.cfg.post_train.eval.max_tool_turns,
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
        weights_D = self.focal.update(rubric_scores(rows, p.rubric_dims))
        focal_log = {f"focal_weight_{dim}": float(w) for dim, w in zip(p.rubric_dims, weights_D, strict=True)}
        pairs = build_preference_pairs(
            rows, dims=p.rubric_dims, weights_D=weights_D, max_pairs_per_prompt=p.max_pairs_per_prompt
        )
        records = pair_records(pairs, by_text, verified, self.step)
        self.tables.append(records)
        result = self._screen(records)
        self.screened.append(result)
        kept = result.kept
        if kept.empty:
            self.on_log(
                "preference",
                self.step,
                {"pairs": 0.0, "pairs_quarantined": float(result.rows_quarantined), **focal_log},
            )
            return None
        kind_of = {record["pair_id"]: pp.kind for record, pp in zip(records, pairs, strict=True)}
        weight_P = focal_pair_weights([kind_of[i] for i in kept["pair_id"]], p.rubric_dims, weights_D)
        self.batch_log = {
            "pairs": float(len(kept)),
            "pairs_quarantined": float(result.rows_quarantined),
            "pair_weight_mean": float(weight_P.mean()),
            **focal_log,
        }
        device = self.engine.device
        return {
            "chosen": [by_text[key] for key in zip(kept["prompt_id"], kept["chosen"], strict=True)],
            "rejected": [by_text[key] for key in zip(kept["prompt_id"], kept["rejected"], strict=True)],
            "score_chosen": torch.tensor(kept["chosen_reward"].to_numpy(), dtype=torch.float32, device=device),
            "score_rejected": torch.tensor(kept["rejected_reward"].to_numpy(), dtype=torch.float32, device=device),
            "weight": weight_P.to(device),
        }


def preference_phase(
    model,
    tokenizer,
    envs,
    tasks: Sequence[Any],
    cfg: PipelineConfig,
    on_log: OnLog,
    ledger: QuarantineLedger,
    *,
    checkpoint_dir: Path | None = None,
) -> tuple[dict[str, float], IntakeResult]:
    """On-policy samples -> verified pairs (shortest correct vs worse) -> offset-DPO against the phase's
    starting policy as reference, with the bidirectional score gap as margin.

    Focal rubric weights (METHODS §6.4) follow the on-policy saturation of each rubric dimension: every step's
    samples update them before its pairs are scored, and they weight each pair's loss
    (``training.objectives.preference``), so a dimension the policy already satisfies stops pulling.

    Each step's pairs pass the ``PreferencePair`` contract before they are trained on; broken pairs go to
    ``ledger``. Trains ``model`` in place, resuming from the newest checkpoint in ``checkpoint_dir`` (the
    reference is ``model`` as passed in: the phase's start, also on resume). Returns the last trained step's
    metrics and the phase's pairs (kept and counted) as one table."""
    from corpus.tokenizer import PAD

    p = cfg.post_train.preference
    if not p.steps:
        return {"pairs": 0.0}, IntakeResult.concat("preference_pairs", [])
    reference = copy.deepcopy(model).eval()
    engine = phase_engine(model, cfg.post_train.engine, p.optim, updates=p.steps)
    batches = PreferenceBatches(engine, tokenizer, envs, tasks, cfg, on_log, ledger)
    pad = tokenizer.token_to_id(PAD)

    def loss_fn(eng, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        loss, stats = pair_loss(
            eng,
            reference,
            batch["chosen"],
            batch["rejected"],
            batch["score_chosen"],
            batch["score_rejected"],
            batch["weight"],
            batches.loss_cfg,
            pad,
        )
        return loss, {k: v for k, v in stats.items() if v.numel() == 1}

    def reported(metrics: Mapping[str, float]) -> dict[str, float]:
        if "loss" not in metrics:  # no step kept a pair: nothing was trained
            return dict(batches.batch_log)
        stats = {k: float(v) for k, v in metrics.items() if k not in _LOOP_KEYS}
        return {"loss": float(metrics["loss"]), **batches.batch_log, **stats}

    loop = phase_loop(
        updates=p.steps,
        batch_size=p.prompts_per_step * p.max_pairs_per_prompt,
        seq_len=cfg.post_train.contracts.max_pair_tokens,
        checkpoint_every=p.checkpoint_every,
        keep=cfg.post_train.keep_checkpoints,
    )
    result = run_phase(
        engine, batches, loss_fn, loop, checkpoint_dir, lambda _, m: on_log("preference", batches.step, reported(m))
    )
    return reported(result.metrics), IntakeResult.concat("preference_pairs", batches.screened)


def rubric_scores(rows: Sequence[Mapping[str, Any]], dims: Sequence[str]) -> torch.Tensor:
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
    ``response_mask``): offset DPO of ``policy`` against ``reference``, pair p weighted by ``weight_P[p]``.
    The batches are built on the reference's device (the policy's: the phase copies one from the other)."""
    from training.objectives import preference_loss

    device = engine_device(reference)
    c_ids, c_attn, c_mask = response_batch(
        [r.prompt_ids for r in chosen],
        [r.response_ids for r in chosen],
        [r.response_mask for r in chosen],
        pad_id,
        device=device,
    )
    r_ids, r_attn, r_mask = response_batch(
        [r.prompt_ids for r in rejected],
        [r.response_ids for r in rejected],
        [r.response_mask for r in rejected],
        pad_id,
        device=device,
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


def pair_records(
    pairs: Sequence[Any], by_text: Mapping[tuple[str, str], Any], verified: Mapping[tuple[str, str], bool], step: int
) -> list[dict[str, Any]]:
    """One step's pairs as ``PreferencePair`` records of plain Python values (a checkpoint stores them as they
    are); the chosen side's verdict is the verified label."""
    records = []
    for i, pp in enumerate(pairs):
        task = by_text[pp.prompt_id, pp.chosen].task
        records.append(
            {
                "pair_id": f"{pp.prompt_id}@{step}#{i}",
                "prompt_id": pp.prompt_id,
                "family": task.family,
                "prompt": task.prompt,
                "chosen": pp.chosen,
                "rejected": pp.rejected,
                "chosen_reward": float(pp.chosen_score),
                "rejected_reward": float(pp.rejected_score),
                "chosen_verified": bool(verified[pp.prompt_id, pp.chosen]),
            }
        )
    return records


def pair_table(
    pairs: Sequence[Any], by_text: Mapping[tuple[str, str], Any], verified: Mapping[tuple[str, str], bool], step: int
) -> pd.DataFrame:
    """One step's pairs as a ``PreferencePair`` table."""
    return pd.DataFrame(pair_records(pairs, by_text, verified, step), columns=list(PAIR_DTYPES))
