"""Plain-torch backend of the training engine (``backend="torch"``): fp32, no ZeRO, data-parallel by one
all-reduce of the flat gradients. The model goes to ``kernels.dispatch.default_device()``, the project's one
device decision (a CPU run and a GPU run differ only in what it returns).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from configs.training import EngineConfig, OptimConfig
from kernels.dispatch import default_device
from training.engine import (
    Engine,
    adamw_hparams,
    clip_gradients,
    cpu_copy,
    launched_world_size,
    trainable_param_groups,
)


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
        device = default_device()
        if device.type != "cpu" and device.index is not None:
            # Allocations that name no index (collectives' buffers, ours) then land on this rank's device.
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
