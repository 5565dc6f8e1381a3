"""The migration stage's building blocks: token windows for calibration and measurement, the measurement taken
after every step, and one training phase.

A phase is its own engine and optimizer over exactly the parameters its freeze function leaves trainable
(``training.engine`` hands only ``requires_grad`` parameters to the optimizer, so frozen ones are never touched,
weight decay included). The expert bias (a buffer the loss-free balancing moves outside the optimizer) is updated
only in phases that train the routers, so a frozen phase leaves every frozen tensor bit for bit as it was.
Phases continue one data stream: each starts where the previous one stopped.

Measurement at each point (METHODS §3.1 step 3c (v), §3.3 acceptance), on the same held-out windows:

    heldout_loss     next-token cross-entropy (nats)
    kl_vs_base       mean KL(base || model) of next-token distributions
    kl_vs_previous   conversions only: KL(model before the conversion || after), the conversion's own effect
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from configs.migrate import MigrateConfig, MigratePhaseConfig

# Training phases in order (METHODS §3.1 steps 2, 3b, 4, then continued pre-training).
PHASES = ("linear_warmup", "partial_training", "mla_warmup", "continued_pretraining")
# Conversion steps (1, 3a, 3c); every point below is measured, in this order.
CONVERSIONS = ("lightning", "qk_norm_fusion", "transmla")
POINTS = ("base", "lightning", "linear_warmup", "qk_norm_fusion", "partial_training", "transmla", "mla_warmup",
          "continued_pretraining", "context_extension")  # fmt: skip

PhaseLog = Callable[[str, int, Mapping[str, float]], None]


def heldout_windows(tokens: np.ndarray, seq_len: int, windows: int, batch_size: int = 16) -> list[torch.Tensor]:
    """[b, seq_len + 1] batches of the first ``windows`` non-overlapping windows ``tokens[i·T : (i+1)·T + 1]``:
    the windows ``evals.harness.heldout_loss`` scores, so the numbers agree with the pre-training stage's."""
    n = min(windows, (len(tokens) - 1) // seq_len)
    if n < 1:
        raise ValueError(f"held-out stream of {len(tokens)} tokens is shorter than one window of {seq_len + 1}")
    rows = np.stack([tokens[i * seq_len : (i + 1) * seq_len + 1].astype(np.int64) for i in range(n)])
    return [torch.from_numpy(rows[s : s + batch_size]) for s in range(0, n, batch_size)]


def calibration_windows(tokens: np.ndarray, seq_len: int, windows: int, batch_size: int) -> list[torch.Tensor]:
    """[b, seq_len] batches of ``windows`` windows spread evenly over the train stream (all of them if fewer)."""
    available = len(tokens) // seq_len
    if available < 1:
        raise ValueError(f"train stream of {len(tokens)} tokens is shorter than one window of {seq_len}")
    starts = np.unique(np.linspace(0, available - 1, num=min(windows, available)).round().astype(np.int64))
    rows = np.stack([tokens[s * seq_len : (s + 1) * seq_len].astype(np.int64) for s in starts])
    return [torch.from_numpy(rows[s : s + batch_size]) for s in range(0, len(rows), batch_size)]


def on_device(batches: list[torch.Tensor], model: nn.Module) -> list[torch.Tensor]:
    device = next(model.parameters()).device
    return [b.to(device) for b in batches]


class Measurements:
    """The measurement points of one migration, against one base on one set of held-out windows."""

    def __init__(self, base: nn.Module, heldout: list[torch.Tensor], log: PhaseLog | None = None) -> None:
        self.base = base
        self.heldout = heldout
        self.log = log
        self.points: list[dict[str, Any]] = []

    def measure(self, point: str, model: nn.Module, *, step: int, previous: nn.Module | None = None) -> dict[str, Any]:
        from model.migration import heldout_loss, logits_kl

        batches = on_device(self.heldout, model)
        self.base.to(batches[0].device)
        entry: dict[str, Any] = {"point": point, "step": step, "heldout_loss": heldout_loss(model, batches)}
        entry["kl_vs_base"] = 0.0 if model is self.base else logits_kl(self.base, model, batches)
        if previous is not None:
            same = previous is self.base
            entry["kl_vs_previous"] = entry["kl_vs_base"] if same else logits_kl(previous, model, batches)
        self.points.append(entry)
        if self.log is not None:
            self.log(f"measure.{point}", step, {k: v for k, v in entry.items() if isinstance(v, float)})
        return entry

    def last(self) -> dict[str, Any]:
        return self.points[-1]


@dataclasses.dataclass
class PhaseResult:
    model: nn.Module
    info: dict[str, Any]  # steps, lr, trainable tensors and count, last logged training metrics
    checkpoints: tuple[Path, ...]  # the phase's complete checkpoints, oldest first
    data_state: dict[str, Any] | None  # where the data stream stopped (None: untouched)
    # The phase's engine (None when it trained nothing): weights go back into it only through it (the merge).
    engine: Any = None


def train_phase(
    name: str,
    model: nn.Module,
    freeze: Callable[[nn.Module], list[str]],
    phase: MigratePhaseConfig,
    mcfg: MigrateConfig,
    train_tokens: np.ndarray,
    *,
    checkpoint_dir: Path,
    data_seed: int,
    data_state: dict[str, Any] | None = None,
    step_offset: int = 0,
    update_router_bias: bool = False,
    router_bias_update_rate: float | None = None,
    seq_len: int | None = None,
    micro_batch_size: int | None = None,
    make_batches: Callable[[int, int], Any] | None = None,
    on_log: PhaseLog | None = None,
) -> PhaseResult:
    """Train ``model`` for ``phase.steps`` steps with only what ``freeze(model)`` leaves trainable. Resumes from
    ``checkpoint_dir`` like every training loop here; ``on_log(name, step_offset + step, metrics)``.

    The context extension trains at its own ``seq_len`` and ``micro_batch_size`` (default: the stage's), on its
    own resumable batch source ``make_batches(rank, world_size)`` (default: the train stream's windows), with
    its own expert-bias rate (default: the model config's)."""
    from configs.training import OptimConfig, TrainLoopConfig
    from training.builder import build_engine
    from training.data import TokenBatches
    from training.lm import expert_bias_updater, lm_loss_fn, load_balance
    from training.loop import train

    trainable = freeze(model)
    info: dict[str, Any] = {
        "steps": phase.steps,
        "lr": phase.lr,
        "trainable_tensors": trainable,
        "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    if phase.steps == 0:
        return PhaseResult(model, info, (), data_state)
    # Every value from the config (nothing from OptimConfig's defaults), so the logged config is the whole recipe.
    optim = OptimConfig(lr=phase.lr, warmup_steps=phase.warmup_steps, min_lr_ratio=mcfg.min_lr_ratio,
                        betas=mcfg.betas, eps=mcfg.adam_eps, weight_decay=mcfg.weight_decay,
                        merge_last_k=mcfg.merge_last_k)  # fmt: skip
    seq_len = seq_len or mcfg.seq_len
    micro_batch_size = micro_batch_size or mcfg.micro_batch_size
    loop = TrainLoopConfig(max_steps=phase.steps, micro_batch_size=micro_batch_size,
                           grad_accum_steps=mcfg.grad_accum_steps, seq_len=seq_len, log_every=mcfg.log_every,
                           checkpoint_every=mcfg.checkpoint_every, keep_checkpoints=mcfg.keep_checkpoints,
                           seed=data_seed)  # fmt: skip
    model.train()
    engine = build_engine(model, mcfg.engine, optim, total_steps=phase.steps, grad_accum_steps=mcfg.grad_accum_steps,
                          micro_batch_size=micro_batch_size)  # fmt: skip
    if make_batches is None:
        batches = TokenBatches(train_tokens, seq_len, micro_batch_size, seed=data_seed, rank=engine.rank,
                               world_size=engine.world_size)  # fmt: skip
    else:
        batches = make_batches(engine.rank, engine.world_size)
    if data_state is not None:
        batches.load_state_dict(data_state)

    def loss_fn(eng, batch):
        loss, stats = lm_loss_fn(eng, batch)
        if "tokens_per_expert" in stats:
            stats["load_balance"] = load_balance(stats)
        return loss, stats

    def log(step: int, metrics: Mapping[str, float]) -> None:
        if on_log is not None:
            on_log(name, step_offset + step, metrics)

    rate = model.config.router_bias_update_rate if router_bias_update_rate is None else router_bias_update_rate
    after_step = expert_bias_updater(engine, rate) if update_router_bias else None
    result = train(engine, batches, loss_fn, loop, checkpoint_dir=checkpoint_dir, on_log=log, after_step=after_step)
    info.update({f"train_{k}": float(v) for k, v in result.metrics.items()}, router_bias_update_rate=rate)
    info["resumed_from_step"] = result.resumed_from
    # Every rank continues the chain (conversions, measurements, the next phase) on full weights: under
    # ZeRO-3 engine.module holds shards, so the full module comes from the engine, gathered.
    model = engine.full_module()
    model.eval()
    return PhaseResult(model, info, result.checkpoints, batches.state_dict(), engine)
