"""DeepSpeed backend of the training engine: ZeRO 0-3, fp32 or bf16, optional CPU offload of the optimizer.

DeepSpeed chooses its accelerator itself (CPU + gloo on CPU machines, CUDA + NCCL on GPUs); the engine checks
that it agrees with ``kernels.dispatch.default_device()``, the project's one device decision. Under a
launcher (torchrun, the deepspeed launcher, Flyte Elastic) it joins their process group; started as a
plain process it becomes a world of one on an in-memory store, so parallel runs never fight over a port.

How it is driven, and why:
- The optimizer is DeepSpeed's "optimizer" config (AdamW) built from our param groups. With
  ``torch_adam`` it is torch's AdamW (no C++ build, and exactly the torch backend's optimizer);
  without, DeepSpeed picks its fused GPU Adam or, with offload, its CPU Adam.
- Gradient accumulation is DeepSpeed's own: after the backward of every micro-batch but the last we call
  its ``step()``, which there only advances its micro-step counter (ZeRO's reduce hooks follow it).
- At ZeRO 0 in fp32 DeepSpeed clips but does not report the norm, so there we clip (with the torch
  backend's function) and switch DeepSpeed's clipping off. Everywhere else DeepSpeed clips and reports.
- DeepSpeed's optimizer state dicts hold a ``LossScaler`` object and namedtuple slice maps, which need
  pickle. The scaler is kept as its attributes and set back into the live scaler; the slice maps are
  rebuilt at initialize and read only by DeepSpeed's universal checkpoints, so they are dropped.
- Under ZeRO-3 every MoE block is a DeepSpeed "leaf module": its parameters (router, all experts, shared
  expert) are gathered together when the block starts. ZeRO-3 otherwise gathers module by module as they
  run and needs every rank to run the same modules in the same order, which a MoE block does not: which
  experts run, and whether they run as one padded ``bmm`` over stacked weights or one by one, depends on
  the rank's tokens. Ranks then issue different all-gathers and the collective aborts (gloo: "Received
  data size doesn't match expected size"); tests/training/test_equivalence_classes.py trains two ranks
  whose blocks take different paths.
- Weights move only through the engine: ``load_full_state_dict`` and ``full_state_dict`` gather each ZeRO-3
  parameter (one at a time, to bound memory), and ``full_module`` hands out a plain replica with the full
  weights, built from a meta-device skeleton copied before ZeRO-3 partitioned the model (no second copy
  of the weights, none of DeepSpeed's hooks).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterable
from typing import Any

import deepspeed
import torch
import torch.distributed as dist
from deepspeed.accelerator import get_accelerator
from deepspeed.runtime.fp16.unfused_optimizer import FP16_UnfusedOptimizer
from deepspeed.utils import set_z3_leaf_modules
from torch import nn

from configs.training import EngineConfig, OptimConfig
from kernels.dispatch import default_device
from model.moe import SparseMoeBlock
from training.engine import Engine, adamw_hparams, clip_gradients, cpu_copy, trainable_param_groups

_LAUNCHER_ENV = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "LOCAL_RANK")
# DeepSpeed's default ZeRO bucket size (elements), sized for billion-parameter models.
_DEFAULT_BUCKET = 500_000_000


def deepspeed_clips(engine_cfg: EngineConfig) -> bool:
    """Whether DeepSpeed clips (and reports the grad norm) itself; see the module docstring."""
    return engine_cfg.zero_stage > 0 or engine_cfg.precision != "fp32"


def deepspeed_config(
    engine_cfg: EngineConfig,
    optim_cfg: OptimConfig,
    *,
    micro_batch_size: int,
    grad_accum_steps: int,
    trainable_numel: int,
) -> dict[str, Any]:
    """The DeepSpeed config dict for our engine and optimizer configs."""
    # ZeRO allocates a gradient bucket per micro-step; one larger than the model only costs memory
    # (2 GB at the default), and deterministic mode fills every fresh allocation.
    bucket = min(_DEFAULT_BUCKET, max(trainable_numel, 1))
    zero: dict[str, Any] = {"stage": engine_cfg.zero_stage, "reduce_bucket_size": bucket}
    if engine_cfg.zero_stage in (1, 2):
        zero["allgather_bucket_size"] = bucket
    if engine_cfg.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    hparams = adamw_hparams(optim_cfg)
    return {
        "train_micro_batch_size_per_gpu": micro_batch_size,
        "gradient_accumulation_steps": grad_accum_steps,
        "gradient_clipping": max(engine_cfg.grad_clip, 0.0) if deepspeed_clips(engine_cfg) else 0.0,
        "bf16": {"enabled": engine_cfg.precision == "bf16"},
        "zero_optimization": zero,
        "optimizer": {
            "type": "AdamW",
            "params": {**hparams, "betas": list(hparams["betas"]), "torch_adam": engine_cfg.torch_adam},
        },
        # The training loop logs; DeepSpeed's own progress lines would duplicate it.
        "steps_per_print": None,
    }


def _join_or_start_world() -> None:
    if dist.is_initialized():
        return
    backend = get_accelerator().communication_backend_name()
    if all(key in os.environ for key in _LAUNCHER_ENV):
        deepspeed.init_distributed(dist_backend=backend)
        return
    # DeepSpeed insists on LOCAL_RANK even when it is alone.
    os.environ.setdefault("LOCAL_RANK", "0")
    dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def meta_skeleton(module: nn.Module) -> nn.Module:
    """A copy of ``module`` whose parameters and persistent buffers are meta tensors (no storage): the shape of
    the model without its weights. Non-persistent buffers (rotary tables, ...) are copied as they are, since no
    state dict carries them back. Shared tensors stay shared."""
    memo: dict[int, torch.Tensor] = {}
    for tensor in module.state_dict(keep_vars=True).values():
        if id(tensor) not in memo:
            meta = tensor.detach().to("meta")
            memo[id(tensor)] = nn.Parameter(meta, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else meta
    # deepcopy takes what the memo already maps instead of copying it.
    return copy.deepcopy(module, memo)


class DeepSpeedEngine(Engine):
    def __init__(
        self,
        model: nn.Module,
        engine_cfg: EngineConfig,
        optim_cfg: OptimConfig,
        *,
        total_steps: int,
        grad_accum_steps: int,
        micro_batch_size: int,
        param_groups: Iterable[dict[str, Any]] | None,
    ) -> None:
        _join_or_start_world()
        groups = trainable_param_groups(model, optim_cfg, param_groups)
        self._params = [p for group in groups for p in group["params"]]
        config = deepspeed_config(
            engine_cfg,
            optim_cfg,
            micro_batch_size=micro_batch_size,
            grad_accum_steps=grad_accum_steps,
            trainable_numel=sum(p.numel() for p in self._params),
        )
        # ZeRO-3 partitions the model in place and hooks its modules; the skeleton is taken before either.
        self._skeleton = meta_skeleton(model) if engine_cfg.zero_stage == 3 else None
        if engine_cfg.zero_stage == 3:
            # One gather per MoE block, identical on every rank (module docstring).
            set_z3_leaf_modules(model, [SparseMoeBlock], raise_if_not_found=False)
        self._ds, _, _, _ = deepspeed.initialize(model=model, model_parameters=groups, config=config)
        decided = default_device()
        if self._ds.device.type != decided.type:
            raise RuntimeError(
                f"DeepSpeed runs on {self._ds.device} but kernels.dispatch.default_device() is {decided}: DeepSpeed "
                "chose its accelerator before the decision was known (set DS_ACCELERATOR to match)"
            )
        super().__init__(
            model,
            engine_cfg,
            optim_cfg,
            total_steps=total_steps,
            grad_accum_steps=grad_accum_steps,
            device=self._ds.device,
        )
        self._record_peak_lrs()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._ds(*args, **kwargs)

    def _backward(self, loss: torch.Tensor, *, last: bool) -> None:
        if self._ds.is_gradient_accumulation_boundary() != last:
            raise RuntimeError("DeepSpeed's micro-step counter disagrees with the engine's; was its step() called?")
        self._ds.backward(loss)
        if not last:
            self._ds.step()

    def _step(self) -> torch.Tensor | float:
        if deepspeed_clips(self.engine_cfg):
            self._ds.step()
            norm = self._ds.get_global_grad_norm()
            return float("nan") if norm is None else norm
        norm = clip_gradients(self._params, self.engine_cfg.grad_clip)
        self._ds.step()
        return norm

    def _optimizer_param_groups(self) -> list[dict[str, Any]]:
        return self._ds.optimizer.param_groups

    def _named_tensors(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict(keep_vars=True)

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, tensor in self._named_tensors().items():
            # ZeRO-3 parameters hold only this rank's shard; gather one at a time to bound memory.
            with deepspeed.zero.GatheredParameters([tensor], enabled=hasattr(tensor, "ds_id")):
                if self.is_main:
                    out[name] = cpu_copy(tensor)
        return out

    def load_full_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        named = self._named_tensors()
        if named.keys() != state.keys():
            raise KeyError(f"weights do not match the model: differing keys {sorted(named.keys() ^ state.keys())}")
        for name, tensor in named.items():
            with deepspeed.zero.GatheredParameters([tensor], modifier_rank=0, enabled=hasattr(tensor, "ds_id")):
                tensor.data.copy_(state[name])
        optimizer = self._ds.optimizer
        if not isinstance(optimizer, torch.optim.Optimizer):
            # ZeRO and bf16 keep fp32 master copies; without this the next step would undo the load.
            optimizer.refresh_fp32_params()

    def full_module(self) -> nn.Module:
        if self._skeleton is None:
            return self.module
        full: dict[str, torch.Tensor] = {}
        seen: dict[int, torch.Tensor] = {}
        for name, tensor in self._named_tensors().items():
            if id(tensor) not in seen:
                # modifier_rank=None: every rank receives the full tensor, and re-partitioning on exit is local.
                with deepspeed.zero.GatheredParameters([tensor], enabled=hasattr(tensor, "ds_id")):
                    seen[id(tensor)] = tensor.detach().clone()
            full[name] = seen[id(tensor)]
        replica = copy.deepcopy(self._skeleton)
        replica.load_state_dict(full, strict=True, assign=True)
        replica.train(self.module.training)
        return replica.to(self.device)

    def optimizer_state_dict(self) -> dict[str, Any]:
        optimizer = self._ds.optimizer
        state = optimizer.state_dict()
        if isinstance(optimizer, torch.optim.Optimizer):
            return state
        state = dict(state)
        state.pop("param_slice_mappings", None)
        if "loss_scaler" in state:
            state["loss_scaler"] = dict(vars(state["loss_scaler"]))
        if "zero_stage" in state:
            state["zero_stage"] = int(state["zero_stage"])
        return state

    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None:
        optimizer = self._ds.optimizer
        if isinstance(optimizer, torch.optim.Optimizer):
            optimizer.load_state_dict(state)
            return
        state = dict(state)
        if "loss_scaler" in state:
            for key, value in state["loss_scaler"].items():
                setattr(optimizer.loss_scaler, key, value)
            state["loss_scaler"] = optimizer.loss_scaler
        if isinstance(optimizer, FP16_UnfusedOptimizer):
            optimizer.load_state_dict(state, load_optimizer_states=True)
            return
        # ZeRO optimizers take one state per data-parallel rank and read their own entry; restoring the
        # fp32 master partitions from the saved ones (not from the bf16 weights) keeps the resume exact.
        per_rank: list[Any] = [None] * self.world_size
        per_rank[self.rank] = state
        optimizer.load_state_dict(per_rank, load_optimizer_states=True, load_from_fp32_weights=True)
