"""Build the training engine a config names. Kept apart from the interface (``training.engine``) and the
backends (``training.torch_engine``, ``training.deepspeed_engine``), which import the interface: a builder
inside the interface module would import its own subclasses and close an import circle.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any

from torch import nn

from configs.base import ConfigError
from configs.training import EngineConfig, OptimConfig
from kernels.dispatch import default_device
from training.engine import Engine


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
        from training.torch_engine import TorchEngine

        return TorchEngine(
            model,
            engine_cfg,
            optim_cfg,
            total_steps=total_steps,
            grad_accum_steps=grad_accum_steps,
            param_groups=param_groups,
        )
    if default_device().type == "cpu":
        # DeepSpeed picks its accelerator itself, once, when first asked; where the decision says CPU on a
        # machine with a GPU (LING26_DEVICE=cpu) it must be told. On a CPU machine it would pick CPU anyway.
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
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


def require_in_place_training(engine_cfg: EngineConfig, where: str) -> None:
    """Refuse ZeRO-3 before any work for stages that sample rollouts from, and export, the very module they
    train (post-training, distillation): ZeRO-3 leaves only shards in that module after the first update, so
    generation and the export would read empty tensors. Pre-training and migration gather through
    ``Engine.full_module`` instead and take ZeRO-3."""
    if engine_cfg.backend == "deepspeed" and engine_cfg.zero_stage == 3:
        raise ConfigError(
            f"{where}.engine.zero_stage=3 is not supported: this stage samples from and exports the module it "
            f"trains in place. Use {where}.engine.zero_stage=2 (with offload_optimizer=true to save memory); "
            "gathered ZeRO-3 training for it belongs to the scale path (issue 13)"
        )
