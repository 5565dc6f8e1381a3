"""The trainer side of asynchronous RL: finished groups -> padded tensors -> decoupled-PPO updates.

Shape legend: B rows (responses), T tokens of prompt + response, V vocabulary. Target position t predicts
token t + 1; tensors named ``*_BT`` in ``RLBatch`` other than ``ids`` / ``attn`` have T - 1 positions.

Per step: the proximal log-probs are the trainer's at the weights before the step (no gradient), the
behaviour log-probs are the rollout engine's, recorded token by token with their versions. The first
update of a step is on-policy with respect to π_prox (ratio 1); the behaviour correction (TIS / IcePop /
KPop / MIS, ``training.objectives.mismatch``) carries the engine mismatch and the rollout's staleness.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from training.objectives.mismatch import MismatchConfig
from training.objectives.policy_gradient import PolicyLossConfig, decoupled_policy_loss, group_advantages
from training.rl.records import RolloutGroup

# (ids [B, T], attention [B, T]) -> logits [B, T, V]
Forward = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class RLBatch:
    ids_BT: torch.Tensor
    attn_BT: torch.Tensor
    target_BT: torch.Tensor  # bool: the next token is model-written
    logp_behav_BT: torch.Tensor
    versions_BT: torch.Tensor  # -1 off target positions
    advantages_B: torch.Tensor
    rewards_B: torch.Tensor

    def to(self, device: torch.device) -> RLBatch:
        """The batch on ``device`` (the same tensors when they are already there)."""
        return RLBatch(**{name: tensor.to(device) for name, tensor in vars(self).items()})


def collate(groups: Sequence[RolloutGroup], pad_id: int) -> RLBatch:
    """Right-padded rows of every record of ``groups`` (group by group), advantages normalised per group."""
    records = [r for g in groups for r in g.records]
    if any(r.reward is None for r in records):
        raise ValueError("every record needs a reward before training (is its group finished?)")
    width = max(len(r.prompt_ids) + len(r.response_ids) for r in records)
    B = len(records)
    ids_BT = torch.full((B, width), pad_id, dtype=torch.long)
    attn_BT = torch.zeros((B, width), dtype=torch.long)
    target_BT = torch.zeros((B, width - 1), dtype=torch.bool)
    logp_BT = torch.zeros((B, width - 1), dtype=torch.float32)
    versions_BT = torch.full((B, width - 1), -1, dtype=torch.long)
    for b, r in enumerate(records):
        p, n = len(r.prompt_ids), len(r.response_ids)
        ids_BT[b, : p + n] = torch.tensor(r.prompt_ids + r.response_ids)
        attn_BT[b, : p + n] = 1
        model_R = torch.tensor(r.response_mask, dtype=torch.bool)
        target_BT[b, p - 1 : p - 1 + n] = model_R
        logp_BT[b, p - 1 : p - 1 + n] = torch.where(model_R, torch.tensor(r.logprobs, dtype=torch.float32), 0.0)
        versions_BT[b, p - 1 : p - 1 + n] = torch.where(model_R, torch.tensor(r.versions), -1)
    rewards_NG = torch.tensor([[r.reward for r in g.records] for g in groups], dtype=torch.float32)
    return RLBatch(
        ids_BT=ids_BT,
        attn_BT=attn_BT,
        target_BT=target_BT,
        logp_behav_BT=logp_BT,
        versions_BT=versions_BT,
        advantages_B=group_advantages(rewards_NG).reshape(-1),
        rewards_B=rewards_NG.reshape(-1),
    )


def token_logps(logits_BTV: torch.Tensor, ids_BT: torch.Tensor) -> torch.Tensor:
    """log π(token_{t+1} | prefix), fp32, [B, T - 1]."""
    logp_BTV = F.log_softmax(logits_BTV[:, :-1].float(), dim=-1)
    return torch.gather(logp_BTV, 2, ids_BT[:, 1:, None])[..., 0]


class DecoupledPPOTrainer:
    """``updates_per_step`` decoupled-PPO updates per step on a plain torch model and optimizer.

    ``unit_ids_fn(batch)`` gives LPO's sentence ids ([B, T - 1]) when ``loss_cfg.level == "sentence"``.
    ``token_sink(batch, logp_prox_BT)`` sees every step's batch with the trainer's log-probs at the weights
    before the step: for tokens of the current version these are π_train at the behaviour weights, the
    other half of the training-inference mismatch report.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        forward: Forward,
        pad_id: int,
        loss_cfg: PolicyLossConfig,
        correction: MismatchConfig,
        updates_per_step: int = 1,
        unit_ids_fn: Callable[[RLBatch], torch.Tensor] | None = None,
        max_grad_norm: float | None = 1.0,
        token_sink: Callable[[RLBatch, torch.Tensor], None] | None = None,
    ):
        if updates_per_step < 1:
            raise ValueError(f"updates_per_step must be >= 1, got {updates_per_step}")
        self.model = model
        self.optimizer = optimizer
        self.forward = forward
        self.pad_id = pad_id
        self.loss_cfg = loss_cfg
        self.correction = correction
        self.updates_per_step = updates_per_step
        self.unit_ids_fn = unit_ids_fn
        self.max_grad_norm = max_grad_norm
        self.token_sink = token_sink

    def _logps(self, batch: RLBatch) -> torch.Tensor:
        return token_logps(self.forward(batch.ids_BT, batch.attn_BT), batch.ids_BT)

    def train_step(self, groups: Sequence[RolloutGroup], *, version: int) -> dict[str, float]:
        host = collate(groups, self.pad_id)
        units_BT = self.unit_ids_fn(host) if self.unit_ids_fn is not None else None
        # Rows are built on the host; the update runs where the model is (kernels.dispatch put it there).
        device = next(self.model.parameters()).device
        batch = host.to(device)
        units_BT = units_BT.to(device) if units_BT is not None else None
        with torch.no_grad():
            logp_prox_BT = self._logps(batch)
        if self.token_sink is not None:
            # The sink writes numpy logs: host tensors (on CPU runs these are the very same tensors).
            self.token_sink(host, logp_prox_BT.cpu())
        num_tokens = batch.target_BT.sum().clamp_min(1)
        out: dict[str, float] = {}
        for update in range(self.updates_per_step):
            logp_BT = self._logps(batch)
            loss, stats = decoupled_policy_loss(
                logp_BT,
                logp_prox_BT,
                batch.logp_behav_BT,
                batch.advantages_B,
                batch.target_BT,
                units_BT,
                self.loss_cfg,
                self.correction,
                num_tokens=num_tokens,
            )
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
            self.optimizer.step()
            if update == 0:
                out["first_update_ratio_mean"] = float(stats["ratio_mean"])
            out.update({k: float(v) for k, v in stats.items()})
            out["loss"] = float(loss.detach())
        behind = version - batch.versions_BT[batch.target_BT]
        out["token_staleness_mean"] = float(behind.float().mean()) if behind.numel() else 0.0
        return out

    def policy_state(self) -> Mapping[str, torch.Tensor]:
        return self.model.state_dict()

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
