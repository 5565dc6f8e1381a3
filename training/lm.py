"""The language-model objective shared by pre-training, migration and continued pre-training: next-token
loss (+ MTP and router z-loss inside the model), the aux-loss-free expert-bias update (METHODS §1.2) and
the load-balance statistic."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch


def lm_loss_fn(engine, batch_BT: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
    """Next-token loss (+ MTP and router z-loss inside the model) on a [B, T+1] window batch."""
    out = engine(batch_BT, labels=batch_BT)
    stats: dict[str, Any] = {"lm_loss": out.lm_loss.detach()}
    if out.mtp_loss is not None:
        stats["mtp_loss"] = out.mtp_loss.detach()
    if out.router_stats is not None:
        stats["z_loss"] = out.router_stats.z_loss.detach()
        stats["tokens_per_expert"] = out.router_stats.tokens_per_expert.detach()
    return out.loss, stats


def expert_bias_updater(engine, rate: float) -> Callable[[torch.nn.Module, Mapping[str, Any]], None]:
    """``after_step`` hook: the aux-loss-free zero-mean sign update of the expert bias, once per optimizer
    step, on the expert loads summed over data-parallel ranks (METHODS.md §1.2)."""
    from model import update_expert_bias

    def after_step(module: torch.nn.Module, stats: Mapping[str, Any]) -> None:
        counts = stats.get("tokens_per_expert")
        if counts is not None and rate > 0:
            update_expert_bias(module, engine.all_reduce_mean(counts.clone()), rate)

    return after_step


def load_balance(stats: Mapping[str, Any]) -> float:
    """max / mean expert load over MoE layers (1.0 = perfectly balanced)."""
    counts = stats["tokens_per_expert"].float()
    return float((counts.max(-1).values / counts.mean(-1).clamp_min(1e-9)).mean())
