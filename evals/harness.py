"""The evaluation harness: for any checkpoint, per environment family — accuracy, format rate, mean
output tokens per answer and per *correct* answer (capability per token) — plus held-out LM loss
against the unigram baseline. Results are a pandera-checked ``EvalResult`` table."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from data_contracts import EvalResult
from inference.rollout import Rollout, rollout
from inference.sampling import SamplingParams

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=96)


def score_rollouts(envs: Mapping[str, Any], rollouts: Sequence[Rollout]) -> pd.DataFrame:
    """One row per rollout: family, verdict, model tokens."""
    rows = []
    for r in rollouts:
        verdict = envs[r.task.family].verify(r.task, r.text)
        rows.append(
            {
                "prompt_id": r.task.task_id,
                "family": r.task.family,
                "difficulty": r.task.difficulty,
                "correct": verdict.correct,
                "format_ok": verdict.format_ok,
                "tokens": r.model_tokens,
                "tool_calls": r.tool_calls,
                "response": r.text,
            }
        )
    return pd.DataFrame(rows)


def summarise(scored: pd.DataFrame, checkpoint: str) -> pd.DataFrame:
    def row(family: str, g: pd.DataFrame) -> dict[str, Any]:
        correct = g.loc[g["correct"], "tokens"]
        return {
            "checkpoint": checkpoint,
            "family": family,
            "n": len(g),
            "accuracy": float(g["correct"].mean()),
            "format_rate": float(g["format_ok"].mean()),
            "mean_tokens": float(g["tokens"].mean()),
            "mean_tokens_correct": float(correct.mean()) if len(correct) else math.nan,
        }

    rows = [row(f, g) for f, g in scored.groupby("family", sort=True)] + [row("all", scored)]
    return EvalResult.validate(pd.DataFrame(rows))


def evaluate_policy(
    engine,
    envs: Mapping[str, Any],
    tasks: Sequence[Any],
    *,
    checkpoint: str,
    params: SamplingParams = GREEDY,
    max_turns: int = 4,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary table, per-rollout table) for ``tasks`` rolled out with ``engine``."""
    scored = score_rollouts(envs, rollout(engine, envs, tasks, params, max_turns=max_turns))
    return summarise(scored, checkpoint), scored


@torch.no_grad()
def heldout_loss(
    model: torch.nn.Module, tokens: np.ndarray, *, seq_len: int, batch_size: int = 16, max_windows: int = 256
) -> float:
    """Mean next-token cross-entropy (nats) over non-overlapping windows of the held-out stream."""
    n_windows = min(max_windows, (len(tokens) - 1) // seq_len)
    if n_windows < 1:
        raise ValueError(f"held-out stream of {len(tokens)} tokens is shorter than one window of {seq_len + 1}")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for start in range(0, n_windows, batch_size):
        idx = range(start, min(start + batch_size, n_windows))
        batch = torch.from_numpy(np.stack([tokens[i * seq_len : (i + 1) * seq_len + 1].astype(np.int64) for i in idx]))
        batch = batch.to(device)
        logits = model(batch[:, :-1]).logits.float()
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1), reduction="sum"
        )
        total += float(loss)
        count += batch[:, 1:].numel()
    model.train(was_training)
    return total / count


def unigram_loss(train_tokens: np.ndarray, heldout_tokens: np.ndarray, vocab_size: int) -> float:
    """Cross-entropy (nats) of the held-out stream under add-one-smoothed training unigram frequencies:
    the loss a model gets by learning token frequencies and nothing else."""
    counts = np.bincount(train_tokens.astype(np.int64), minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    return float(-logp[heldout_tokens.astype(np.int64)].mean())
