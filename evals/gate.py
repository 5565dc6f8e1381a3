"""The evaluation gate: a checkpoint is published only if its rows of the comparison table meet the
thresholds of ``EvalGateConfig``, on their own and against the previous checkpoint.

Each check is a row: metric, family, value, threshold, bound ("min" or "max") and gap, signed so that a
negative gap fails (``value - threshold`` for a minimum, ``threshold - value`` for a maximum). A value the
table lacks (a family not measured) or cannot define (tokens per correct answer with no correct answer)
fails its check. The verdict is JSON (``gate_verdict.json``, which publishing reads); ``enforce_gate``
raises ``GateFailed`` naming every failing check.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from configs.evaluation import EvalGateConfig
from lineage.refusal import StageRefused

VERDICT_FILE = "gate_verdict.json"


@dataclass(frozen=True, kw_only=True)
class GateCheck:
    metric: str
    family: str
    value: float | None  # None: not measured, or undefined
    threshold: float
    bound: Literal["min", "max"]
    gap: float | None
    passed: bool
    detail: str


@dataclass(frozen=True, kw_only=True)
class GateVerdict:
    checkpoint: str
    previous: str | None
    passed: bool
    checks: tuple[GateCheck, ...]

    @property
    def failures(self) -> list[GateCheck]:
        return [c for c in self.checks if not c.passed]

    def to_dict(self) -> dict[str, Any]:
        """Strict JSON content (no NaN: a missing value is null). ``reasons`` are the failing checks' details,
        what publishing's ``EvalGate.reasons`` shows."""
        return {
            "checkpoint": self.checkpoint,
            "previous": self.previous,
            "passed": self.passed,
            "reasons": [c.detail for c in self.failures],
            "checks": [asdict(c) for c in self.checks],
        }


class GateFailed(StageRefused):
    """A checkpoint missed the evaluation gate; ``verdict`` holds every check."""

    def __init__(self, verdict: GateVerdict) -> None:
        self.verdict = verdict
        lines = "\n".join(f"  - {c.detail}" for c in verdict.failures)
        super().__init__(
            f"evaluation gate failed for {verdict.checkpoint!r}: {len(verdict.failures)} of {len(verdict.checks)} "
            f"checks missed\n{lines}\nImprove the checkpoint, or change the thresholds under evaluate.gate if they "
            "are wrong"
        )


def _check(metric: str, family: str, value: float | None, threshold: float, bound: Literal["min", "max"], why: str):
    name = f"{metric}[{family}]"
    if value is None or not math.isfinite(value):
        return GateCheck(
            metric=metric, family=family, value=None, threshold=threshold, bound=bound, gap=None, passed=False,
            detail=f"{name} is {why}; the gate needs it {'>=' if bound == 'min' else '<='} {threshold:g}",
        )  # fmt: skip
    gap = value - threshold if bound == "min" else threshold - value
    passed = gap >= 0
    relation = (">=" if passed else "<") if bound == "min" else ("<=" if passed else ">")
    margin = f"margin {gap:.4g}" if passed else f"short by {-gap:.4g}"
    return GateCheck(
        metric=metric, family=family, value=float(value), threshold=float(threshold), bound=bound, gap=float(gap),
        passed=passed, detail=f"{name} = {value:.4g} {relation} {bound} {threshold:g} ({margin})",
    )  # fmt: skip


def _values(table: pd.DataFrame, checkpoint: str) -> dict[tuple[str, str], float]:
    rows = table[table["checkpoint"] == checkpoint]
    return {(r.metric, r.family): float(r.value) for r in rows.itertuples()}


def _why_missing(values: dict[tuple[str, str], float], metric: str, family: str) -> str:
    if (metric, family) not in values:
        return "not in the comparison table (evaluate that family, or drop its threshold)"
    return "undefined (nothing it averages over: no correct answer or no success)"


def _checks(cfg: EvalGateConfig, now: dict, before: dict | None) -> Iterator[GateCheck]:
    def measured(metric: str, family: str) -> float | None:
        return now.get((metric, family))

    families = {family for _, family in now}
    for family, minimum in cfg.min_accuracy.items():
        # A zero minimum on a family not evaluated here is no requirement; anything else must be measured.
        if family in families or minimum > 0:
            value = measured("accuracy", family)
            yield _check("accuracy", family, value, minimum, "min", _why_missing(now, "accuracy", family))
    single = (
        ("format_rate", "all", cfg.min_format_rate, "min"),
        ("tokens_per_correct", "all", cfg.max_tokens_per_correct, "max"),
        ("agentic_success", "agentic", cfg.min_agentic_success, "min"),
    )
    for metric, family, threshold, bound in single:
        if threshold is not None:
            yield _check(metric, family, measured(metric, family), threshold, bound, _why_missing(now, metric, family))
    if before is None:
        return
    if cfg.max_accuracy_regression is not None:
        for (metric, family), old in sorted(before.items()):
            if metric == "accuracy" and ("accuracy", family) in now:
                drop = old - now["accuracy", family]
                yield _check("accuracy_drop", family, drop, cfg.max_accuracy_regression, "max", "undefined")
    if cfg.max_heldout_loss_regression is not None:
        old, new = before.get(("heldout_loss", "all")), now.get(("heldout_loss", "all"))
        rise = None if old is None or new is None else new - old
        why = "not measured for both checkpoints (give the evaluation held-out tokens)"
        yield _check("heldout_loss_rise", "all", rise, cfg.max_heldout_loss_regression, "max", why)


def gate_verdict(
    table: pd.DataFrame, cfg: EvalGateConfig, *, checkpoint: str, previous: str | None = None
) -> GateVerdict:
    """Check ``checkpoint``'s rows of a ``ComparisonRow`` table, and its regression against ``previous``."""
    known = set(table["checkpoint"])
    for name in (checkpoint, previous):
        if name is not None and name not in known:
            raise ValueError(f"checkpoint {name!r} has no rows in the comparison table (it holds {sorted(known)})")
    before = _values(table, previous) if previous is not None else None
    checks = tuple(_checks(cfg, _values(table, checkpoint), before))
    return GateVerdict(checkpoint=checkpoint, previous=previous, passed=all(c.passed for c in checks), checks=checks)


def enforce_gate(verdict: GateVerdict) -> GateVerdict:
    """``verdict`` when it passed; ``GateFailed`` otherwise."""
    if not verdict.passed:
        raise GateFailed(verdict)
    return verdict


def write_gate_verdict(verdict: GateVerdict, out_dir: str | Path) -> Path:
    """``out_dir/gate_verdict.json``; written whether or not the gate passed, before ``enforce_gate`` raises."""
    path = Path(out_dir) / VERDICT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(verdict.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path
