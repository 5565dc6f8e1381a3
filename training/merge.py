"""WSM's "merge": average the weights of the last checkpoints, and put the average back through the engine.

The average is read from checkpoint files (full weights, written by the main rank). Putting it into a model
that an engine trains goes through the engine (:func:`load_merged`): under ZeRO-3 each rank holds only a
shard of every parameter, so ``module.load_state_dict`` on one rank would fail on the shard shapes, or, had
the others already left, leave their shards stale. The engine's loader gathers each parameter, writes it
and re-partitions, and its ``full_module`` hands back a plain module with the full weights.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from training.checkpoint import load_model_weights
from training.engine import Engine


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


def load_merged(engine: Engine, checkpoints: Sequence[Path]) -> nn.Module:
    """Collective: every rank must call it. Load the mean of ``checkpoints`` into ``engine`` (gathered under
    ZeRO-3) and return the engine's full module on every rank: under ZeRO 0-2 and the torch backend that is
    ``engine.module`` itself (the same object, so nothing else changes), under ZeRO-3 a plain replica."""
    engine.load_full_state_dict(merge_checkpoints(checkpoints))
    return engine.full_module()
