"""One training-engine interface for every stage: DeepSpeed (the default) or plain torch.

Protocol of one optimizer step::

    for batch in micro_batches:               # exactly grad_accum_steps of them
        loss = loss_of(engine(batch))         # forward through the engine, not engine.module
        engine.backward(loss)                 # gradients of loss / grad_accum_steps accumulate
    result = engine.step()                    # reduce, clip, lr from the WSM schedule, update, zero grad

Forward goes through the engine because DeepSpeed attaches its ZeRO backward bookkeeping to the outputs
of its own forward. ``engine.module`` is the unwrapped model for everything else (attributes, MoE bias
updates, evaluation). Only parameters that require grad are given to the optimizer, so frozen ones are
never touched (no weight decay either). Every engine places the model on ``kernels.dispatch.default_device()``
(DeepSpeed through its accelerator, checked against it), the project's one device decision.

This module is the interface only: the backends live in ``training.torch_engine`` and
``training.deepspeed_engine`` and ``training.builder.build_engine`` picks one, so no backend imports the
module that builds it. Checkpoint code types against ``training.checkpoint.CheckpointEngine`` (a Protocol
this class satisfies) and never imports this module.
"""

from __future__ import annotations

import abc
import dataclasses
import os
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from configs.training import EngineConfig, OptimConfig
from training.schedule import wsm_lr_factor


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepResult:
    grad_norm: float  # global L2 norm of the gradients, before clipping
    lr: float  # learning rate of the first parameter group for this step


def adamw_hparams(optim_cfg: OptimConfig) -> dict[str, Any]:
    return {
        "lr": optim_cfg.lr,
        "betas": tuple(optim_cfg.betas),
        "eps": optim_cfg.eps,
        "weight_decay": optim_cfg.weight_decay,
    }


def trainable_param_groups(
    model: nn.Module, optim_cfg: OptimConfig, param_groups: Iterable[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """Optimizer groups holding only parameters that require grad; empty groups are dropped.

    Default: matrices (ndim >= 2) decay, vectors (biases, norm gains) do not. Given groups keep their
    own keys (``lr``, ``weight_decay``, ...), which override the config for that group.
    """
    if param_groups is None:
        params = [p for p in model.parameters() if p.requires_grad]
        param_groups = [
            {"params": [p for p in params if p.ndim >= 2]},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
        ]
    groups = []
    for group in param_groups:
        params = [p for p in group["params"] if p.requires_grad]
        if params:
            groups.append({**group, "params": params})
    if not groups:
        raise ValueError("no parameter requires grad: nothing to train")
    return groups


def launched_world_size() -> int:
    """World size announced by a launcher (torchrun, deepspeed, Flyte Elastic); 1 without one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


class Engine(abc.ABC):
    """Backend-independent part: micro-step accounting, the WSM schedule, collectives."""

    def __init__(
        self,
        module: nn.Module,
        engine_cfg: EngineConfig,
        optim_cfg: OptimConfig,
        *,
        total_steps: int,
        grad_accum_steps: int,
        device: torch.device,
    ) -> None:
        self.module = module
        self.engine_cfg = engine_cfg
        self.optim_cfg = optim_cfg
        self.total_steps = total_steps
        self.grad_accum_steps = grad_accum_steps
        self.device = device
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.world_size = dist.get_world_size() if dist.is_initialized() else 1
        self.global_step = 0
        self._micro_steps = 0
        self._peak_lrs: list[float] = []

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def zero_stage(self) -> int:
        return self.engine_cfg.zero_stage

    def layout(self) -> dict[str, Any]:
        """What a checkpoint's optimizer state depends on; resuming needs the same."""
        return {
            "backend": self.engine_cfg.backend,
            "world_size": self.world_size,
            "zero_stage": self.zero_stage,
            "precision": self.engine_cfg.precision,
        }

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    @abc.abstractmethod
    def forward(self, *args: Any, **kwargs: Any) -> Any: ...

    def backward(self, loss: torch.Tensor) -> None:
        if self._micro_steps == self.grad_accum_steps:
            raise RuntimeError(
                f"backward() called more than grad_accum_steps={self.grad_accum_steps} times before step()"
            )
        self._micro_steps += 1
        self._backward(loss, last=self._micro_steps == self.grad_accum_steps)

    def step(self) -> StepResult:
        if self._micro_steps != self.grad_accum_steps:
            raise RuntimeError(
                f"step() after {self._micro_steps} backward() calls; expected grad_accum_steps={self.grad_accum_steps}"
            )
        factor = self.lr_factor(self.global_step)
        for group, peak in zip(self._optimizer_param_groups(), self._peak_lrs, strict=True):
            group["lr"] = peak * factor
        grad_norm = self._step()
        self.global_step += 1
        self._micro_steps = 0
        return StepResult(grad_norm=float(grad_norm), lr=self._peak_lrs[0] * factor)

    def _record_peak_lrs(self) -> None:
        # Called once the optimizer exists, before any checkpoint load could overwrite group["lr"].
        self._peak_lrs = [group["lr"] for group in self._optimizer_param_groups()]

    def lr_factor(self, step: int) -> float:
        cfg = self.optim_cfg
        return wsm_lr_factor(
            step, warmup_steps=cfg.warmup_steps, total_steps=self.total_steps, min_lr_ratio=cfg.min_lr_ratio
        )

    def scheduler_state_dict(self) -> dict[str, Any]:
        # The schedule is a pure function of the step; peak lrs come from the config of the resuming run.
        return {"global_step": self.global_step}

    def load_scheduler_state_dict(self, state: dict[str, Any]) -> None:
        self.global_step = state["global_step"]

    @abc.abstractmethod
    def _backward(self, loss: torch.Tensor, *, last: bool) -> None: ...

    @abc.abstractmethod
    def _step(self) -> torch.Tensor | float:
        """Reduce, clip, update and zero the gradients; return the pre-clip global grad norm."""

    @abc.abstractmethod
    def _optimizer_param_groups(self) -> list[dict[str, Any]]: ...

    @abc.abstractmethod
    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Collective. Full CPU copies of the weights on the main rank; ``{}`` on the others."""

    @abc.abstractmethod
    def load_full_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Collective. Load full weights (every rank passes them) and refresh any master copies."""

    def full_module(self) -> nn.Module:
        """Collective. A module with the full weights on every rank, for work outside the engine (evaluation,
        conversions, export). Backends whose ``module`` already holds full weights on every rank return it
        (the same object); ZeRO-3 returns a plain replica with its shards gathered."""
        return self.module

    @abc.abstractmethod
    def optimizer_state_dict(self) -> dict[str, Any]:
        """This rank's optimizer state as plain nested data (no objects that would need pickle)."""

    @abc.abstractmethod
    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None: ...

    def all_reduce_mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """Mean over ranks (a copy on this engine's device)."""
        tensor = tensor.detach().to(self.device, torch.float32, copy=True)
        if self.world_size > 1:
            dist.all_reduce(tensor)
            tensor /= self.world_size
        return tensor

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def broadcast_object(self, obj: Any) -> Any:
        """The main rank's ``obj`` on every rank."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu", copy=True)


def clip_gradients(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Global L2 norm of the gradients; scales them to ``max_norm`` when larger (``max_norm <= 0``: no clip)."""
    grads = [p.grad for p in params if p.grad is not None]
    norm = torch.nn.utils.get_total_norm(grads)
    if max_norm > 0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm
