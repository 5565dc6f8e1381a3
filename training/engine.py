"""One training-engine interface for every stage: DeepSpeed (the default) or plain torch.

Protocol of one optimizer step::

    for batch in micro_batches:               # exactly grad_accum_steps of them
        loss = loss_of(engine(batch))         # forward through the engine, not engine.module
        engine.backward(loss)                 # gradients of loss / grad_accum_steps accumulate
    result = engine.step()                    # reduce, clip, lr from the WSM schedule, update, zero grad

Forward goes through the engine because DeepSpeed attaches its ZeRO backward bookkeeping to the outputs
of its own forward. ``engine.module`` is the unwrapped model for everything else (attributes, MoE bias
updates, evaluation). Only parameters that require grad are given to the optimizer, so frozen ones are
never touched (no weight decay either). The engine decides the device; no other training module asks.
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


class TorchEngine(Engine):
    """Plain torch: fp32, no ZeRO; several processes average their gradients with one all-reduce."""

    def __init__(
        self,
        model: nn.Module,
        engine_cfg: EngineConfig,
        optim_cfg: OptimConfig,
        *,
        total_steps: int,
        grad_accum_steps: int,
        param_groups: Iterable[dict[str, Any]] | None,
    ) -> None:
        if engine_cfg.zero_stage != 0 or engine_cfg.precision != "fp32":
            raise ValueError("backend='torch' supports zero_stage=0 and precision='fp32' only; use backend='deepspeed'")
        if launched_world_size() > 1 and not dist.is_initialized():
            # backend=None: gloo for CPU tensors and the accelerator's backend for device tensors.
            dist.init_process_group()
        accelerator = torch.accelerator.current_accelerator()
        device = torch.device("cpu")
        if accelerator is not None:
            device = torch.device(accelerator.type, int(os.environ.get("LOCAL_RANK", "0")))
            torch.accelerator.set_device_index(device.index)
        model.to(device)
        super().__init__(
            model, engine_cfg, optim_cfg, total_steps=total_steps, grad_accum_steps=grad_accum_steps, device=device
        )
        groups = trainable_param_groups(model, optim_cfg, param_groups)
        self._params = [p for group in groups for p in group["params"]]
        self.optimizer = torch.optim.AdamW(groups, **adamw_hparams(optim_cfg), foreach=None)
        self._record_peak_lrs()
        if self.world_size > 1:
            # Same start on every rank, as DeepSpeed does at initialize.
            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.module(*args, **kwargs)

    def _backward(self, loss: torch.Tensor, *, last: bool) -> None:
        (loss / self.grad_accum_steps).backward()

    def _step(self) -> torch.Tensor:
        if self.world_size > 1:
            # A parameter unused on this rank (an idle expert) still joins with zeros, or the flat buffers
            # of the ranks would differ in length.
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self._params]
            for param, grad in zip(self._params, grads, strict=True):
                param.grad = grad
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            flat /= self.world_size
            for grad, reduced in zip(grads, flat.split([g.numel() for g in grads]), strict=True):
                grad.copy_(reduced.view_as(grad))
        norm = clip_gradients(self._params, self.engine_cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def _optimizer_param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        if not self.is_main:
            return {}
        return {name: cpu_copy(t) for name, t in self.module.state_dict().items()}

    def load_full_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.module.load_state_dict(state, strict=True)

    def optimizer_state_dict(self) -> dict[str, Any]:
        return self.optimizer.state_dict()

    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state)


def build_engine(
    model: nn.Module,
    engine_cfg: EngineConfig,
    optim_cfg: OptimConfig,
    *,
    total_steps: int,
    param_groups: Iterable[dict[str, Any]] | None = None,
    grad_accum_steps: int = 1,
    micro_batch_size: int = 1,
) -> Engine:
    """Wrap ``model`` for training with the backend ``engine_cfg.backend`` names.

    ``total_steps`` sizes the schedule; ``micro_batch_size`` only feeds DeepSpeed's bookkeeping.
    Without a launcher, DeepSpeed runs as a world of one (see ``training.deepspeed_engine``).
    """
    if engine_cfg.backend == "torch":
        return TorchEngine(
            model,
            engine_cfg,
            optim_cfg,
            total_steps=total_steps,
            grad_accum_steps=grad_accum_steps,
            param_groups=param_groups,
        )
    # Imported here: DeepSpeed takes seconds to import and the torch backend must not pay for it.
    from training.deepspeed_engine import DeepSpeedEngine

    return DeepSpeedEngine(
        model,
        engine_cfg,
        optim_cfg,
        total_steps=total_steps,
        grad_accum_steps=grad_accum_steps,
        micro_batch_size=micro_batch_size,
        param_groups=param_groups,
    )
