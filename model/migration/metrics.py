"""How far a conversion step moved the model: next-token KL against a reference and held-out loss, in fp32.

    logits_kl    = mean over real positions t of KL(p_ref(· | x_≤t) || p_model(· | x_≤t))
    heldout_loss = mean over real targets of -log p_model(x_{t+1} | x_≤t)

Both run under ``no_grad`` in eval mode (restored after) and average over tokens, not batches.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .calibration import Batch, unpack_batch


def _eval_logits(model: nn.Module, ids_BT: torch.Tensor, mask_BT: torch.Tensor | None) -> torch.Tensor:
    return model(ids_BT, attention_mask=mask_BT).logits.float()


class _EvalMode:
    def __init__(self, *models: nn.Module) -> None:
        self.models = models
        self.modes = [m.training for m in models]

    def __enter__(self) -> None:
        for m in self.models:
            m.eval()

    def __exit__(self, *exc) -> None:
        for m, mode in zip(self.models, self.modes, strict=True):
            m.train(mode)


@torch.no_grad()
def logits_kl(reference_model: nn.Module, model: nn.Module, batches: Iterable[Batch]) -> float:
    """Mean KL(reference || model) of the next-token distributions over every real position of ``batches``."""
    total, count = 0.0, 0
    with _EvalMode(reference_model, model):
        for batch in batches:
            ids_BT, mask_BT = unpack_batch(batch)
            ref_BTV = _eval_logits(reference_model, ids_BT, mask_BT).log_softmax(-1)
            out_BTV = _eval_logits(model, ids_BT, mask_BT).log_softmax(-1)
            kl_BT = (ref_BTV.exp() * (ref_BTV - out_BTV)).sum(-1)
            valid_BT = torch.ones_like(kl_BT, dtype=torch.bool) if mask_BT is None else mask_BT.bool()
            total += kl_BT[valid_BT].double().sum().item()
            count += int(valid_BT.sum())
    if count == 0:
        raise ValueError("no positions to compare: empty batches")
    return total / count


@torch.no_grad()
def heldout_loss(model: nn.Module, batches: Iterable[Batch]) -> float:
    """Token-weighted mean next-token cross-entropy (nats) over ``batches``."""
    total, count = 0.0, 0
    with _EvalMode(model):
        for batch in batches:
            ids_BT, mask_BT = unpack_batch(batch)
            logits_BTV = _eval_logits(model, ids_BT, mask_BT)
            targets_BT = ids_BT[:, 1:]
            valid_BT = torch.ones_like(targets_BT, dtype=torch.bool) if mask_BT is None else mask_BT[:, 1:].bool()
            nll_BT = torch.nn.functional.cross_entropy(
                logits_BTV[:, :-1].flatten(0, 1), targets_BT.flatten(), reduction="none"
            ).view_as(targets_BT)
            total += nll_BT[valid_BT].double().sum().item()
            count += int(valid_BT.sum())
    if count == 0:
        raise ValueError("no targets to score: empty batches")
    return total / count
