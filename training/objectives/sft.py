"""Supervised fine-tuning on packed rows, with loss on response tokens only.

Shape legend: N packed rows, B batch rows, T sequence length, V vocabulary.

Packing: each example is ``prompt + response + [eos]``; examples are laid end to end into rows of
``seq_len`` tokens in their given order (next-fit: a row is closed when the next example does not fit),
and the rest of a row is ``pad_id``. ``loss_mask[n, t] = 1`` marks ``input_ids[n, t]`` as a *target*:
the response tokens and the closing EOS, so the model learns to answer and to stop, never to write prompts.

Attention **does** cross examples inside a row (a plain causal LM, no block-diagonal mask): the model
is not told where an example starts. That is the common packing trade-off for small models; it is
harmless for the loss, because every position whose target is a prompt token, or the first token of
the next example, has ``loss_mask`` 0, and the preceding EOS marks the boundary in the context.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def pack_examples(
    prompt_ids_list: Sequence[Sequence[int]],
    response_ids_list: Sequence[Sequence[int]],
    seq_len: int,
    pad_id: int,
    eos_id: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids [N, seq_len], loss_mask [N, seq_len])``; ValueError for an example longer than a row."""
    if len(prompt_ids_list) != len(response_ids_list):
        raise ValueError(f"{len(prompt_ids_list)} prompts but {len(response_ids_list)} responses")
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    rows: list[tuple[list[int], list[int]]] = []
    ids: list[int] = []
    mask: list[int] = []
    for i, (prompt, response) in enumerate(zip(prompt_ids_list, response_ids_list, strict=True)):
        # The first token of a row is never a target, so a response needs a prompt token before it.
        if not prompt or not response:
            raise ValueError(f"example {i}: prompt and response must both be non-empty")
        size = len(prompt) + len(response) + 1
        if size > seq_len:
            raise ValueError(f"example {i} has {size} tokens with EOS, more than seq_len={seq_len}")
        if len(ids) + size > seq_len:
            rows.append((ids, mask))
            ids, mask = [], []
        ids += [*prompt, *response, eos_id]
        mask += [0] * len(prompt) + [1] * (len(response) + 1)
    if ids:
        rows.append((ids, mask))

    input_ids_NT = torch.full((len(rows), seq_len), pad_id, dtype=torch.long)
    loss_mask_NT = torch.zeros((len(rows), seq_len), dtype=torch.long)
    for n, (row_ids, row_mask) in enumerate(rows):
        input_ids_NT[n, : len(row_ids)] = torch.tensor(row_ids, dtype=torch.long)
        loss_mask_NT[n, : len(row_mask)] = torch.tensor(row_mask, dtype=torch.long)
    return input_ids_NT, loss_mask_NT


def sft_loss(
    logits_BTV: torch.Tensor,
    input_ids_BT: torch.Tensor,
    loss_mask_BT: torch.Tensor,
    *,
    num_tokens: int | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Token-level mean cross-entropy of the targets marked by ``loss_mask``.

    ``logits[:, t]`` predicts ``input_ids[:, t + 1]``, weighted by ``loss_mask[:, t + 1]``. The mean is
    over target tokens; ``num_tokens`` fixes the denominator to the global target count when this call
    sees one micro-batch (default: this call's count).
    """
    if logits_BTV.ndim != 3 or logits_BTV.shape[:2] != input_ids_BT.shape:
        raise ValueError(
            f"logits must be [B, T, V] over input_ids {tuple(input_ids_BT.shape)}, got {tuple(logits_BTV.shape)}"
        )
    if loss_mask_BT.shape != input_ids_BT.shape:
        raise ValueError(f"loss_mask has shape {tuple(loss_mask_BT.shape)}, input_ids has {tuple(input_ids_BT.shape)}")
    targets_BT = input_ids_BT[:, 1:]
    weight_BT = loss_mask_BT[:, 1:].float()
    count = weight_BT.sum()
    if num_tokens is None:
        num_tokens = count.clamp_min(1)
    elif not isinstance(num_tokens, torch.Tensor) and num_tokens <= 0:
        raise ValueError(f"num_tokens must be positive, got {num_tokens}")
    # fp32 log-softmax: bf16 logits lose the small differences the loss is made of.
    logits_BTV = logits_BTV[:, :-1].float()
    nll_BT = F.cross_entropy(logits_BTV.transpose(1, 2), targets_BT, reduction="none")
    loss = (nll_BT * weight_BT).sum() / num_tokens
    correct_BT = (logits_BTV.detach().argmax(dim=-1) == targets_BT).float()
    stats = {
        "num_tokens": count,
        "nll": (nll_BT.detach() * weight_BT).sum() / count.clamp_min(1),
        "accuracy": (correct_BT * weight_BT).sum() / count.clamp_min(1),
    }
    return loss, stats
