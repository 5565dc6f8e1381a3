"""The stage's trainer: rollout records pass their contract (``data_contracts.rollouts``) before the
decoupled-PPO trainer sees them, and every trained record and token is kept for the stage's tables.

``ContractedTrainer`` wraps a ``DecoupledPPOTrainer`` behind the scheduler's ``Trainer`` protocol:

* each step, the batch's records are screened; broken records go to the quarantine ledger with their rule
  and leave their group (a group left empty leaves the batch); a step with nothing left makes no update;
* the kept records become ``RolloutRow`` rows, and the trainer's proximal log-probs of their tokens go to
  the mismatch report's ``TokenLog``;
* the weights pushed to the rollout engine are cast to the engine's dtype, tensor by tensor (a bf16 engine
  checks the bf16 bytes it loaded against the trainer's checksum of the same bytes; tensors the model keeps
  in fp32 whatever its dtype, such as the routers' expert bias, stay fp32);
* all of it is part of the resume state, so a resumed run's tables are the uninterrupted run's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from data_contracts import IntakeResult, QuarantineLedger
from data_contracts.rollouts import ROLLOUT_DTYPES, TABLE, screen_rollouts
from training.rl.mismatch_report import TokenLog
from training.rl.records import RolloutGroup, RolloutRecord
from training.rl.trainer import DecoupledPPOTrainer, RLBatch


def sentence_units(tokenizer: Any, records: Sequence[RolloutRecord], width: int) -> torch.Tensor:
    """LPO's sentence ids aligned with ``trainer.collate``'s target positions (-1 off the response)."""
    from training.objectives import batch_sentence_unit_ids

    units = batch_sentence_unit_ids(tokenizer, [r.response_ids for r in records], [r.response_mask for r in records])
    out_BT = torch.full((len(records), width), -1, dtype=torch.long)
    for b, r in enumerate(records):
        start = len(r.prompt_ids) - 1
        out_BT[b, start : start + len(r.response_ids)] = units[b, : len(r.response_ids)]
    return out_BT


class ContractedTrainer:
    def __init__(
        self,
        inner: DecoupledPPOTrainer,
        *,
        reward_range: tuple[float, float],
        engine_dtypes: Mapping[str, torch.dtype],
        tokenizer: Any = None,
    ):
        self.inner = inner
        self.reward_range = reward_range
        self.engine_dtypes = dict(engine_dtypes)
        self.ledger = QuarantineLedger()
        self.tokens = TokenLog()
        self.rows: list[pd.DataFrame] = []
        self.rows_in = 0
        self.steps = 0
        self._version = 0
        self._seen: set[str] = set()
        self._records: list[RolloutRecord] = []
        inner.token_sink = self._sink
        if inner.loss_cfg.level == "sentence":
            if tokenizer is None:
                raise ValueError("sentence-level loss needs the tokenizer for its units")
            inner.unit_ids_fn = self._units(tokenizer)

    def _units(self, tokenizer: Any) -> Callable[[RLBatch], torch.Tensor]:
        return lambda batch: sentence_units(tokenizer, self._records, batch.target_BT.shape[1])

    def _sink(self, batch: RLBatch, logp_prox_BT: torch.Tensor) -> None:
        self.tokens.add(self.steps, self._version, self._records, batch, logp_prox_BT)

    def train_step(self, groups: Sequence[RolloutGroup], *, version: int) -> dict[str, float]:
        self.steps += 1
        self._version = version
        records = [r for g in groups for r in g.records]
        result = screen_rollouts(
            records,
            self.ledger,
            step=self.steps,
            trained_version=version,
            reward_range=self.reward_range,
            seen_ids=self._seen,
        )
        self.rows_in += result.rows_in
        self.rows.append(result.kept)
        kept_ids = set(result.kept["rollout_id"])
        kept = [
            RolloutGroup(g.prompt_index, g.task, [r for r in g.records if r.rollout_id in kept_ids], g.admitted_version)
            for g in groups
        ]
        kept = [g for g in kept if g.records]
        stats = {"rollouts_kept": float(len(kept_ids)), "rollouts_quarantined": float(result.rows_quarantined)}
        for family, part in result.kept.groupby("family", sort=True):
            stats[f"reward.{family}"] = float(part["reward"].mean())
            stats[f"accuracy.{family}"] = float(part["correct"].mean())
        if not kept:
            return {**stats, "updated": 0.0}
        self._records = [r for g in kept for r in g.records]
        stats.update(self.inner.train_step(kept, version=version))
        return {**stats, "updated": 1.0}

    def rollouts(self) -> IntakeResult:
        """Every screened record of the run as one table's intake result (kept rows and quarantine counts)."""
        kept = pd.concat(self.rows, ignore_index=True) if self.rows else pd.DataFrame(columns=list(ROLLOUT_DTYPES))
        result = IntakeResult(TABLE, self.rows_in, kept.astype(ROLLOUT_DTYPES), self.ledger.counts(TABLE))
        result.check_balance()
        return result

    def policy_state(self) -> Mapping[str, torch.Tensor]:
        return {
            name: tensor.detach().to(self.engine_dtypes[name]) for name, tensor in self.inner.policy_state().items()
        }

    def state(self) -> dict[str, Any]:
        rows = pd.concat(self.rows, ignore_index=True) if self.rows else pd.DataFrame(columns=list(ROLLOUT_DTYPES))
        return {
            "trainer": self.inner.state(),
            "steps": self.steps,
            "rows_in": self.rows_in,
            "rows": {c: rows[c].tolist() for c in ROLLOUT_DTYPES},
            "quarantine": self.ledger.frame().to_dict("records"),
            "tokens": self.tokens.state(),
        }

    def load_state(self, state: Mapping[str, Any]) -> None:
        self.inner.load_state(state["trainer"])
        self.steps, self.rows_in = state["steps"], state["rows_in"]
        rows = pd.DataFrame({c: state["rows"][c] for c in ROLLOUT_DTYPES}).astype(ROLLOUT_DTYPES)
        self.rows = [rows]
        self._seen = set(rows["rollout_id"])
        self.ledger = QuarantineLedger()
        for row in state["quarantine"]:
            self.ledger.add(row["table"], row["row_id"], row["rule"], row["detail"], row["excerpt"])
        self.tokens.load_state(state["tokens"])
