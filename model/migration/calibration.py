"""Calibration activations: the inputs x = input_layernorm(h) of chosen attention layers on calibration batches.

Steps 3a and 3c derive everything from these inputs (the projections are linear in x once QK-Norm is fused).
All layers are captured in one pass of the model as it is, so a layer's inputs come from the unconverted
layers below it. Inputs are kept as fp32 rows [N, D] (N real calibration tokens): calibration sets are small by
design (METHODS §3.2 uses a few batches); the second moments alone would not give the per-token RMS the inserted
MLA norms are calibrated with.

A batch is a LongTensor of token ids [B, T] or a mapping with ``input_ids`` and optional ``attention_mask``
(padded positions are left out of the statistics).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

Batch = torch.Tensor | Mapping[str, torch.Tensor]


def unpack_batch(batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, torch.Tensor):
        return batch, None
    return batch["input_ids"], batch.get("attention_mask")


@dataclass
class AttentionInputs:
    """What one attention layer saw during calibration."""

    x_ND: torch.Tensor  # every real calibration token's attention input, fp32
    # The first batch's full call (x, cos, sin, mask bias), to measure a converted layer's output error.
    sample_call: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]


@torch.no_grad()
def collect_attention_inputs(
    model: nn.Module, batches: Iterable[Batch], layer_indices: list[int]
) -> dict[int, AttentionInputs]:
    """Inputs of ``model.model.layers[i].attention`` for every i in ``layer_indices``. MTP layers (index >=
    num_hidden_layers) only run with labels, so the pass then hands the batch in as its own labels."""
    layers = model.model.layers
    with_mtp = any(i >= model.config.num_hidden_layers for i in layer_indices)
    rows: dict[int, list[torch.Tensor]] = {i: [] for i in layer_indices}
    samples: dict[int, tuple] = {}
    current_mask: list[torch.Tensor | None] = [None]

    def hook_for(i: int):
        def hook(_module, args):
            x_BTD, cos_BTR, sin_BTR, bias_B1TS = args[:4]
            mask_BT = current_mask[0]
            x_ND = x_BTD.reshape(-1, x_BTD.shape[-1]) if mask_BT is None else x_BTD[mask_BT.bool()]
            rows[i].append(x_ND.detach().float().cpu())
            samples.setdefault(i, (x_BTD.detach(), cos_BTR, sin_BTR, bias_B1TS))

        return hook

    handles = [layers[i].attention.register_forward_pre_hook(hook_for(i)) for i in layer_indices]
    was_training = model.training
    model.eval()
    try:
        for batch in batches:
            ids_BT, mask_BT = unpack_batch(batch)
            current_mask[0] = None if mask_BT is None else mask_BT[:, -ids_BT.shape[1] :]
            model(ids_BT, labels=ids_BT if with_mtp else None, attention_mask=mask_BT)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    if any(not rows[i] for i in layer_indices):
        raise ValueError("no calibration batches were given")
    return {i: AttentionInputs(torch.cat(rows[i]), samples[i]) for i in layer_indices}
