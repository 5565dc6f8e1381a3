"""Pieces the three post-training phases share: token log-probs of responses, right-padded batches of
(prompt, response) rows, per-phase engines and their run through the one training loop, and evaluation of
the current policy.

Shape legend: B rows, T time, V vocabulary.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F

from configs import PipelineConfig
from configs.training import EngineConfig, PhaseOptimConfig, TrainLoopConfig


def response_batch(
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    masks: Sequence[Sequence[int]],
    pad_id: int,
    *,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids [B, T]``, ``attention [B, T]`` and ``target_mask [B, T-1]``: target position
    t (predicting token t+1) counts iff token t+1 is a model-written response token. Filled row by row on
    the CPU, then moved to ``device`` (the model's) in one copy each, not one per row."""
    width = max(len(p) + len(r) for p, r in zip(prompts, responses, strict=True))
    ids_BT = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attn_BT = torch.zeros((len(prompts), width), dtype=torch.long)
    target_BT = torch.zeros((len(prompts), width - 1), dtype=torch.long)
    for b, (p, r, m) in enumerate(zip(prompts, responses, masks, strict=True)):
        ids_BT[b, : len(p) + len(r)] = torch.tensor([*p, *r])
        attn_BT[b, : len(p) + len(r)] = 1
        target_BT[b, len(p) - 1 : len(p) - 1 + len(r)] = torch.tensor(list(m))
    if device is None:
        return ids_BT, attn_BT, target_BT
    return ids_BT.to(device), attn_BT.to(device), target_BT.to(device)


def token_logps(model, ids_BT: torch.Tensor, attn_BT: torch.Tensor) -> torch.Tensor:
    """log π(token_{t+1} | prefix) for t = 0..T-2, fp32 [B, T-1]."""
    logits_BTV = model(ids_BT, attention_mask=attn_BT).logits[:, :-1].float()
    return torch.gather(F.log_softmax(logits_BTV, dim=-1), 2, ids_BT[:, 1:, None])[..., 0]


def phase_engine(model, engine_cfg: EngineConfig, optim: PhaseOptimConfig, *, updates: int):
    """A fresh optimizer for one phase of ``updates`` optimizer steps, with the configured backend."""
    from training.builder import build_engine

    return build_engine(model, engine_cfg, optim.for_updates(updates), total_steps=updates)


def phase_loop(*, updates: int, batch_size: int, seq_len: int, checkpoint_every: int, keep: int) -> TrainLoopConfig:
    """The shared loop's config for a phase: one micro-batch per update, and a log call after every update,
    so the phase sees each update's own loss and stats (not a window mean) and reports them as it always did."""
    return TrainLoopConfig(
        max_steps=updates,
        micro_batch_size=batch_size,
        seq_len=seq_len,
        log_every=1,
        checkpoint_every=checkpoint_every,
        keep_checkpoints=keep,
    )


def run_phase(engine, batches, loss_fn, loop_cfg: TrainLoopConfig, checkpoint_dir: Path | None, on_update):
    """``training.loop.train`` for one phase. Without ``checkpoint_dir`` (a benchmark, a unit test) the
    checkpoints go to a temporary folder and nothing resumes."""
    from training.loop import train

    if checkpoint_dir is not None:
        return train(engine, batches, loss_fn, loop_cfg, checkpoint_dir=checkpoint_dir, on_log=on_update)
    with tempfile.TemporaryDirectory(prefix="ling26-phase-") as tmp:
        return train(engine, batches, loss_fn, loop_cfg, checkpoint_dir=Path(tmp), on_log=on_update)


def engine_device(model) -> torch.device:
    """Where ``model`` (an engine or a module) keeps its weights: the batches it reads are built there."""
    device = getattr(model, "device", None)
    return device if isinstance(device, torch.device) else next(model.parameters()).device


def evaluate(
    model, tokenizer, envs: Mapping[str, Any], tasks: Sequence[Any], cfg: PipelineConfig, checkpoint: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    from corpus.tokenizer import EOS, PAD
    from evals.harness import evaluate_policy
    from inference.native import NativeEngine
    from inference.sampling import SamplingParams

    engine = NativeEngine(model, tokenizer, eos_id=tokenizer.token_to_id(EOS), pad_id=tokenizer.token_to_id(PAD))
    ev = cfg.post_train.eval
    return evaluate_policy(
        engine,
        envs,
        tasks,
        checkpoint=checkpoint,
        params=SamplingParams(temperature=0.0, max_new_tokens=ev.max_new_tokens),
        max_turns=ev.max_tool_turns,
    )


def eval_metrics(summary: pd.DataFrame, prefix: str) -> dict[str, float]:
    out = {}
    for row in summary.itertuples():
        out[f"{prefix}.{row.family}.accuracy"] = float(row.accuracy)
        out[f"{prefix}.{row.family}.mean_tokens"] = float(row.mean_tokens)
        if row.mean_tokens_correct == row.mean_tokens_correct:
            out[f"{prefix}.{row.family}.mean_tokens_correct"] = float(row.mean_tokens_correct)
    return out
