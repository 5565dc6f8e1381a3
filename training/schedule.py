"""WSM learning-rate schedule: Warmup, Stable, then Merge instead of decay.

Ling 2.0/2.6 pre-train with a linear warmup to the peak lr and then a constant lr; the annealing a decay
phase would give comes from averaging the weights of the last k checkpoints
(:func:`merge_checkpoints`), which also lets any later point of the run be "annealed" after the fact.

    factor(s) = (s + 1) / warmup_steps                         for s < warmup_steps
              = 1                                              afterwards (min_lr_ratio == 0, the default)
              = r + (1 - r) * (1 + cos(pi * p)) / 2            afterwards, with r = min_lr_ratio in (0, 1)
                p = (s - warmup_steps) / (total_steps - warmup_steps), capped at 1

``s`` counts optimizer steps already taken, so the first step uses ``1 / warmup_steps`` of the peak and
step ``warmup_steps - 1`` the full peak.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch

from training.checkpoint import load_model_weights


def wsm_lr_factor(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the peak lr for the optimizer step that follows ``step`` completed steps."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if not 0.0 < min_lr_ratio < 1.0:
        return 1.0
    progress = min((step - warmup_steps) / max(total_steps - warmup_steps, 1), 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def merge_checkpoints(paths: Sequence[Path]) -> dict[str, torch.Tensor]:
    """The mean of the model weights of ``paths`` (checkpoint dirs), accumulated in at least fp32.

    Floating tensors are averaged and returned in their stored dtype; integer and bool tensors (counters,
    masks) are taken from the last checkpoint, as averaging them has no meaning.
    """
    if not paths:
        raise ValueError("merge_checkpoints needs at least one checkpoint")
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for index, path in enumerate(paths):
        weights = load_model_weights(path)
        if index == 0:
            dtypes = {name: t.dtype for name, t in weights.items()}
        elif weights.keys() != dtypes.keys():
            raise ValueError(
                f"{path} holds different tensors than {paths[0]}: {sorted(weights.keys() ^ dtypes.keys())}"
            )
        for name, tensor in weights.items():
            if not tensor.is_floating_point():
                total[name] = tensor
            elif index == 0:
                total[name] = tensor.to(torch.promote_types(tensor.dtype, torch.float32))
            elif tensor.shape != total[name].shape:
                raise ValueError(f"{path}: {name} has shape {tuple(tensor.shape)}, expected {tuple(total[name].shape)}")
            else:
                total[name] += tensor
    return {name: (t / len(paths)).to(dtypes[name]) if t.is_floating_point() else t for name, t in total.items()}
