"""The training loop every stage shares: resume, accumulate, step, log, checkpoint.

The model-specific part is the caller's pure ``loss_fn(model, batch) -> (loss, stats)``. It receives the
engine as ``model`` (forward must run through the engine; ``model.module`` is the unwrapped network) and
one micro-batch already on the engine's device. ``after_step(module, stats)`` runs once per optimizer
step with the unwrapped module and that step's stats averaged over its micro-batches, on every rank;
reducing them across ranks, where wanted (MoE expert loads for the bias update), is the caller's call.

Metrics reach ``on_log(step, metrics)`` on the main rank every ``log_every`` steps and at the end:
``loss`` and every scalar stat averaged over the steps since the last log and over ranks, ``grad_norm``
and ``lr`` of the last step, ``tokens_per_s`` (``micro_batch_size * seq_len`` per micro-batch, over
the compute time of those steps, checkpoint writing excluded) and ``tokens`` seen so far.

A run resumes from the newest complete checkpoint in ``checkpoint_dir`` and, because weights, optimizer,
schedule, RNG and data position all come back exactly, continues bit for bit as if never stopped.

``batches`` may run out before ``max_steps`` (a source that decides step by step whether there is anything to
train on, as the preference phase does): when it raises ``StopIteration`` at the first micro-batch of a step,
the loop ends there, logging and checkpointing the steps it took, so a rerun resumes into the same ending.
``max_steps`` is then an upper bound (it still sizes the schedule the caller built). Running out in the middle
of a step's accumulation would apply a partial gradient, so that raises instead.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import torch
from tqdm import tqdm

from configs.base import to_dict
from configs.training import TrainLoopConfig
from training.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, prune, save_checkpoint
from training.engine import Engine

log = logging.getLogger(__name__)

Stats = Mapping[str, float | torch.Tensor]
LossFn = Callable[[Engine, Any], tuple[torch.Tensor, Stats]]


class ResumableBatches(Iterator[Any], Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainResult:
    step: int
    metrics: dict[str, float]  # the last logged metrics
    checkpoints: tuple[Path, ...]  # complete checkpoints kept in checkpoint_dir, oldest first
    resumed_from: int  # step of the checkpoint this run resumed from; 0 for a fresh start


def progress_enabled() -> bool:
    """``LING26_PROGRESS=0`` / ``=1`` force the bar off / on; otherwise it shows on a terminal only."""
    flag = os.environ.get("LING26_PROGRESS")
    return flag != "0" if flag is not None else sys.stderr.isatty()


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _is_scalar(value: float | torch.Tensor) -> bool:
    return not isinstance(value, torch.Tensor) or value.numel() == 1


def _accumulate(
    engine: Engine, batches: Iterator[Any], loss_fn: LossFn, count: int
) -> tuple[torch.Tensor, dict] | None:
    """Forward and backward ``count`` micro-batches; their mean loss and mean stats, or None when ``batches``
    ran out before the first of them."""
    loss_sum = torch.zeros((), device=engine.device)
    stats_sum: dict[str, Any] = {}
    for index in range(count):
        try:
            batch = next(batches)
        except StopIteration:
            if index == 0:
                return None
            raise RuntimeError(f"the batches ran out after {index} of a step's {count} micro-batches") from None
        loss, stats = loss_fn(engine, _to_device(batch, engine.device))
        engine.backward(loss)
        loss_sum += loss.detach().float()
        for key, value in stats.items():
            value = value.detach() if isinstance(value, torch.Tensor) else value
            stats_sum[key] = stats_sum[key] + value if key in stats_sum else value
    return loss_sum / count, {key: value / count for key, value in stats_sum.items()}


def train(
    engine: Engine,
    batches: ResumableBatches,
    loss_fn: LossFn,
    loop_cfg: TrainLoopConfig,
    *,
    checkpoint_dir: Path,
    on_log: Callable[[int, dict[str, float]], None] | None = None,
    after_step: Callable[[torch.nn.Module, dict[str, Any]], None] | None = None,
    resume: bool = True,
) -> TrainResult:
    checkpoint_dir = Path(checkpoint_dir)
    step = resumed_from = 0
    metrics: dict[str, float] = {}
    if not resume and list_checkpoints(checkpoint_dir):
        raise FileExistsError(f"{checkpoint_dir} holds checkpoints; resume from them or use an empty directory")
    latest = latest_checkpoint(checkpoint_dir) if resume else None
    if latest is not None:
        step, data_state, extra = load_checkpoint(engine, latest)
        batches.load_state_dict(data_state)
        resumed_from = step
        metrics = dict(extra.get("metrics", {})) if isinstance(extra, dict) else {}
        log.info("resumed from %s", latest)
    tokens_per_step = loop_cfg.micro_batch_size * loop_cfg.seq_len * loop_cfg.grad_accum_steps * engine.world_size
    window: dict[str, torch.Tensor] = {}
    window_steps, window_seconds = 0, 0.0
    show_bar = engine.is_main and progress_enabled()

    def log_window(step: int, result: Any, bar: tqdm) -> dict[str, float]:
        nonlocal window, window_steps, window_seconds
        keys = sorted(window)
        # One collective for all scalars; every rank has the same keys, so the order agrees.
        means = engine.all_reduce_mean(torch.stack([window[k] for k in keys]) / window_steps).tolist()
        metrics = {
            **dict(zip(keys, means, strict=True)),
            "grad_norm": result.grad_norm,
            "lr": result.lr,
            "tokens_per_s": tokens_per_step * window_steps / window_seconds,
            "tokens": float(tokens_per_step * step),
        }
        window, window_steps, window_seconds = {}, 0, 0.0
        bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}")
        if engine.is_main:
            if on_log is not None:
                on_log(step, metrics)
            if not show_bar:
                log.info(
                    "step %d/%d %s", step, loop_cfg.max_steps, " ".join(f"{k}={v:.4g}" for k, v in metrics.items())
                )
        return metrics

    def save(step: int, metrics: dict[str, float]) -> None:
        extra = {"loop": to_dict(loop_cfg), "metrics": metrics}
        save_checkpoint(engine, checkpoint_dir, step=step, data_state=batches.state_dict(), extra=extra)
        if engine.is_main:
            prune(checkpoint_dir, loop_cfg.keep_checkpoints)

    saved_step = step if latest is not None else None
    with tqdm(total=loop_cfg.max_steps, initial=step, disable=not show_bar, desc="train", unit="step") as bar:
        while step < loop_cfg.max_steps:
            started = time.perf_counter()
            accumulated = _accumulate(engine, batches, loss_fn, loop_cfg.grad_accum_steps)
            if accumulated is None:
                break
            loss, stats = accumulated
            result = engine.step()
            step += 1
            if after_step is not None:
                after_step(engine.module, stats)
            window_seconds += time.perf_counter() - started
            window_steps += 1
            scalars = {**{k: v for k, v in stats.items() if _is_scalar(v)}, "loss": loss}
            for key, value in scalars.items():
                value = torch.as_tensor(value, dtype=torch.float32, device=engine.device).reshape(())
                window[key] = window[key] + value if key in window else value
            bar.update(1)

            if step % loop_cfg.log_every == 0 or step == loop_cfg.max_steps:
                metrics = log_window(step, result, bar)
            if step % loop_cfg.checkpoint_every == 0 or step == loop_cfg.max_steps:
                save(step, metrics)
                saved_step = step
        if window_steps:  # the batches ran out with steps not logged yet
            metrics = log_window(step, result, bar)
        if saved_step != step:  # ... or not checkpointed yet
            save(step, metrics)
    return TrainResult(
        step=step, metrics=metrics, checkpoints=tuple(list_checkpoints(checkpoint_dir)), resumed_from=resumed_from
    )
