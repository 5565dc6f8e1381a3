"""Teacher samples as right-padded training batches for ``topk_forward_kl``.

Shape legend: B rows, T time (prompt + response, padded), K teacher top-k.

Target position t predicts token t + 1 (``training.post_train.common.response_batch``), so response token j
of a row with prompt length P sits at target position P - 1 + j, and the teacher's top-k for it goes there.
Positions that are not targets (prompt, observations, padding) hold a harmless top-k: ids 0..K-1 at
log(1/K) each, finite and summing to one, as the loss asks of masked positions.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from training.post_train.common import response_batch


def with_stop(rollout: Any, eos_id: int) -> tuple[list[int], list[int]]:
    """``(response_ids, response_mask)`` of a rollout, with the EOS it ended on appended as a model token.

    Engines drop the EOS from the ids they return; distilling without it would teach every token but the
    decision to stop, and a student that forgets to stop runs past its answer."""
    ids, mask = list(rollout.response_ids), list(rollout.response_mask)
    if rollout.finish_reason == "eos":
        return [*ids, eos_id], [*mask, 1]
    return ids, mask


def teacher_batch(
    rows: Sequence[Mapping[str, Any]], pad_id: int, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(input_ids [B, T], attention [B, T], target_mask [B, T-1], topk_ids [B, T-1, K],
    topk_logprobs [B, T-1, K])`` from ``TeacherSample`` rows (lists or the arrays parquet returns)."""
    prompts = [np.asarray(r["prompt_ids"], dtype=np.int64).tolist() for r in rows]
    responses = [np.asarray(r["response_ids"], dtype=np.int64).tolist() for r in rows]
    masks = [np.asarray(r["response_mask"], dtype=np.int64).tolist() for r in rows]
    ids_BT, attn_BT, target_BT = response_batch(prompts, responses, masks, pad_id)
    B, T1 = target_BT.shape
    topk_ids_BTK = torch.arange(k, dtype=torch.long).expand(B, T1, k).clone()
    topk_logp_BTK = torch.full((B, T1, k), -math.log(k), dtype=torch.float32)
    for b, (row, p, r) in enumerate(zip(rows, prompts, responses, strict=True)):
        span = slice(len(p) - 1, len(p) - 1 + len(r))
        topk_ids_BTK[b, span] = torch.from_numpy(np.array(row["topk_ids"], dtype=np.int64)).view(len(r), k)
        topk_logp_BTK[b, span] = torch.from_numpy(np.array(row["topk_logprobs"], dtype=np.float32)).view(len(r), k)
    return ids_BT, attn_BT, target_BT, topk_ids_BTK, topk_logp_BTK
