"""What a release came from: the typed input of the gate, the model card and the registry tags.

The publish stage fills a ``ReleaseLineage`` from MLflow and DVC (``publishing.collect.collect_lineage``);
tests build one directly. Nothing here reads a store, so the gate and the card stay pure functions of it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, kw_only=True)
class StageRecord:
    """One stage run the release depends on. ``outputs`` maps each DVC-tracked output path to its md5."""

    stage: str
    run_id: str
    git_sha: str
    git_dirty: bool
    flyte_execution_id: str = "none"
    outputs: Mapping[str, str] = field(default_factory=dict)
    # Stage-level gates the run recorded as tags (e.g. migrate's ``parity_gate``): name -> "passed" | "failed".
    gates: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class ContractTable:
    """Row accounting of one contract-checked table: every row is either kept or quarantined with its rule."""

    stage: str
    table: str
    rows_in: int
    rows_kept: int
    rows_quarantined: int
    quarantined_by_rule: Mapping[str, int] = field(default_factory=dict)

    @property
    def pass_rate(self) -> float:
        return self.rows_kept / self.rows_in if self.rows_in else 1.0

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.rows_kept + self.rows_quarantined


@dataclass(frozen=True, kw_only=True)
class SuiteResult:
    """A great-expectations suite run over a whole table."""

    stage: str
    suite: str
    success: bool
    evaluated: int
    failed: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class EvalMetric:
    """One number of the model-index: ``metric`` of the model on ``task`` (a task family or "all")."""

    task: str
    metric: str
    value: float
    dataset: str
    split: str = "eval"


@dataclass(frozen=True, kw_only=True)
class EvalGate:
    """The evaluation gate's verdict on the checkpoint being released, with the numbers it judged."""

    passed: bool
    reasons: tuple[str, ...] = ()
    metrics: tuple[EvalMetric, ...] = ()
    run_id: str = ""


@dataclass(frozen=True, kw_only=True)
class ReleaseLineage:
    """Everything the card links back to and the gate checks, for one release."""

    tracking_uri: str
    parent_run_id: str
    git_sha: str
    git_dirty: bool
    flyte_execution_id: str
    stages: tuple[StageRecord, ...]
    eval_gate: EvalGate
    contracts: tuple[ContractTable, ...] = ()
    suites: tuple[SuiteResult, ...] = ()
    decontamination: Mapping[str, Any] = field(default_factory=dict)
    # Training-inference mismatch statistics (e.g. per-token log-prob gaps); None until a stage measures them.
    mismatch: Mapping[str, float] | None = None

    @property
    def dirty(self) -> bool:
        """Whether the pipeline or any stage it depends on ran from a work tree that differed from its commit."""
        return self.git_dirty or any(s.git_dirty for s in self.stages)

    def stage(self, name: str) -> StageRecord | None:
        return next((s for s in self.stages if s.stage == name), None)

    def dvc_outputs(self) -> dict[str, str]:
        """Every DVC output of every stage: path -> md5."""
        return {path: md5 for s in self.stages for path, md5 in s.outputs.items()}

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready content (what the MLflow run keeps as ``release/lineage.json``)."""
        return _plain(dataclasses.asdict(self))


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
