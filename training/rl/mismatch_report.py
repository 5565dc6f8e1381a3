"""The training-inference mismatch report (issue 12): the same sampled tokens scored by the rollout engine
(π_infer, the behaviour log-probs it recorded) and by the trainer (π_train), per token, per step and in sum.

The trainer's log-probs come from ``DecoupledPPOTrainer``'s proximal pass (the weights before the step). For a
token sampled by the current version those weights are the behaviour weights, so the pair is the pure engine
mismatch; for a stale token (sampled by an older version) the pair also holds the policy's drift since then.
Summaries are therefore taken over the fresh tokens (staleness 0); ``all_tokens`` repeats them over every
token for comparison. Statistics are on the raw values, whatever the correction masks
(``training.objectives.mismatch.mismatch_stats``), plus what each correction method would mask on the same
tokens, so a release gate can read one artifact.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from training.objectives.mismatch import MismatchConfig, mismatch_correction
from training.rl.records import RolloutRecord
from training.rl.trainer import RLBatch

COLUMNS = ("step", "rollout_id", "family", "position", "version", "staleness", "logp_infer", "logp_train")
METHODS = ("kpop", "icepop", "tis", "mis", "none")
TEXT_COLUMNS = ("rollout_id", "family")


class TokenLog:
    """Per-token (engine, trainer) log-prob pairs of every trained step, in columns."""

    def __init__(self) -> None:
        self._parts: list[dict[str, np.ndarray]] = []

    def add(
        self, step: int, version: int, records: Sequence[RolloutRecord], batch: RLBatch, logp_train_BT: torch.Tensor
    ) -> None:
        """``records`` are the batch's rows in order (``trainer.collate``'s order)."""
        for b, record in enumerate(records):
            target_T = batch.target_BT[b]
            n = int(target_T.sum())
            if n == 0:
                continue
            versions = batch.versions_BT[b][target_T].numpy()
            self._parts.append(
                {
                    "step": np.full(n, step, dtype=np.int64),
                    "rollout_id": np.full(n, record.rollout_id, dtype=object),
                    "family": np.full(n, record.family, dtype=object),
                    # Index among the row's model tokens: comparable across rows whatever the prompt length.
                    "position": np.arange(n, dtype=np.int64),
                    "version": versions.astype(np.int64),
                    "staleness": (version - versions).astype(np.int64),
                    "logp_infer": batch.logp_behav_BT[b][target_T].numpy().astype(np.float64),
                    "logp_train": logp_train_BT[b][target_T].detach().float().numpy().astype(np.float64),
                }
            )

    def frame(self) -> pd.DataFrame:
        if not self._parts:
            return pd.DataFrame({c: np.array([], dtype=object if c in TEXT_COLUMNS else None) for c in COLUMNS})
        return pd.DataFrame({c: np.concatenate([p[c] for p in self._parts]) for c in COLUMNS})

    def state(self) -> dict[str, Any]:
        """Resume state (``training.state_io``-serialisable): numeric columns as arrays, text as lists."""
        frame = self.frame()
        return {c: frame[c].tolist() if c in TEXT_COLUMNS else frame[c].to_numpy(copy=True) for c in COLUMNS}

    def load_state(self, state: Mapping[str, Any]) -> None:
        part = {c: np.asarray(state[c], dtype=object if c in TEXT_COLUMNS else None) for c in COLUMNS}
        self._parts = [part] if len(part["step"]) else []


def _stats(frame: pd.DataFrame, cfg: MismatchConfig) -> dict[str, Any]:
    """``mismatch_correction``'s statistics of ``cfg`` over the tokens of ``frame``, as plain floats."""
    if frame.empty:
        return {"num_tokens": 0.0}
    logp_train = torch.tensor(frame["logp_train"].to_numpy(), dtype=torch.float32)[None]
    logp_infer = torch.tensor(frame["logp_infer"].to_numpy(), dtype=torch.float32)[None]
    _, stats = mismatch_correction(logp_train, logp_infer, torch.ones_like(logp_train, dtype=torch.bool), cfg)
    out: dict[str, Any] = {}
    buckets: dict[str, dict[str, float]] = {}
    for key, value in stats.items():
        if key.startswith(("masked_fraction/", "tokens/")):
            kind, bucket = key.split("/")
            buckets.setdefault(bucket, {})[kind] = float(value)
        else:
            out[key] = float(value)
    out["by_bucket"] = buckets
    return out


def _mis_rows(frame: pd.DataFrame, cfg: MismatchConfig) -> float:
    """MIS masks whole rows: the fraction of rollouts it would drop (its ratio is a product over the row)."""
    if frame.empty:
        return 0.0
    log_k = frame["logp_train"] - frame["logp_infer"]
    log_rho = log_k.groupby([frame["step"], frame["rollout_id"]]).sum()
    if cfg.mis_unit == "geometric_mean":
        log_rho = log_rho / frame.groupby(["step", "rollout_id"]).size()
    low = math.log(cfg.mis_min) if cfg.mis_min > 0 else -math.inf
    return float(((log_rho < low) | (log_rho > math.log(cfg.mis_cap))).mean())


def summarise(frame: pd.DataFrame, correction: MismatchConfig) -> dict[str, Any]:
    """The mismatch summary (module docstring): fresh tokens under the stage's correction, every token, what
    each method would mask on the fresh tokens, and per-step values for curves."""
    fresh = frame[frame["staleness"] == 0]
    by_method = {}
    for method in METHODS:
        if method == "mis":
            by_method[method] = {"masked_row_fraction": _mis_rows(fresh, correction)}
            continue
        stats = _stats(fresh, dataclasses.replace(correction, method=method))
        by_method[method] = {"masked_fraction": stats.get("masked_fraction", 0.0)}
    by_step = []
    for step, part in fresh.groupby("step", sort=True):
        stats = _stats(part, correction)
        by_step.append(
            {"step": int(step), **{k: stats[k] for k in ("num_tokens", "masked_fraction", "logp_abs_diff", "k3_kl")}}
        )
    by_family = {str(f): _stats(part, correction) for f, part in fresh.groupby("family", sort=True)}
    return {
        "correction": dataclasses.asdict(correction),
        "tokens": len(frame),
        "fresh_tokens": len(fresh),
        "stale_fraction": float(1 - len(fresh) / len(frame)) if len(frame) else 0.0,
        "fresh": _stats(fresh, correction),
        "all_tokens": _stats(frame, correction),
        "by_method": by_method,
        "by_family": {f: {k: v for k, v in s.items() if k != "by_bucket"} for f, s in by_family.items()},
        "by_step": by_step,
    }


def flat_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The summary's headline numbers as ``mismatch.<name>`` floats (MLflow, metrics.json)."""
    fresh = summary["fresh"]
    out = {
        "mismatch.tokens": float(summary["tokens"]),
        "mismatch.fresh_tokens": float(summary["fresh_tokens"]),
        "mismatch.stale_fraction": float(summary["stale_fraction"]),
    }
    for key in ("masked_fraction", "logp_abs_diff", "k3_kl", "logp_train_mean", "ratio_min", "ratio_max"):
        if key in fresh:
            out[f"mismatch.{key}"] = float(fresh[key])
    for bucket, values in fresh.get("by_bucket", {}).items():
        if values.get("tokens", 0.0) > 0:
            out[f"mismatch.masked_fraction.{bucket}"] = float(values["masked_fraction"])
    for method, values in summary["by_method"].items():
        for key, value in values.items():
            out[f"mismatch.{method}.{key}"] = float(value)
    return out
