"""The publish gate: a release goes out only when its evaluation gate passed, every data contract held, and its
lineage is complete enough for the card to trace every number to a run, a data version and a commit.

``check_release`` collects every reason at once (a refusal that names one problem per attempt wastes a pipeline
run per problem); ``require_release`` raises ``PublishRefused`` with all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

from configs.publish import PublishConfig
from lineage.refusal import StageRefused
from publishing.provenance import ReleaseLineage

# What ``lineage.manifest.git_state`` records when it cannot ask git.
UNKNOWN_SHA = "unknown"


class PublishRefused(StageRefused):
    """The gate refused a release; ``reasons`` lists every problem, each with what to do about it."""

    def __init__(self, reasons: tuple[str, ...]):
        self.reasons = reasons
        super().__init__("publish refused:\n" + "\n".join(f"  - {r}" for r in reasons))


@dataclass(frozen=True, kw_only=True)
class GateVerdict:
    passed: bool
    reasons: tuple[str, ...]
    # True when the tree was dirty and `allow_dirty` let it through; the card and the registry say so.
    dirty_allowed: bool
    # True when stage outputs were not DVC-versioned and `allow_unversioned` let it through; the card says so.
    unversioned_allowed: bool = False


def check_release(lineage: ReleaseLineage, config: PublishConfig) -> GateVerdict:
    reasons = [*_eval_reasons(lineage), *_contract_reasons(lineage), *_lineage_reasons(lineage, config)]
    if lineage.dirty and not config.allow_dirty:
        reasons.append(
            "the git work tree was dirty when a stage or the pipeline ran: commit the changes and re-run the "
            "pipeline, or set publish.allow_dirty=true (the card will record it)"
        )
    unversioned = any(not s.outputs or not all(s.outputs.values()) for s in lineage.stages)
    return GateVerdict(
        passed=not reasons,
        reasons=tuple(reasons),
        dirty_allowed=lineage.dirty and config.allow_dirty,
        unversioned_allowed=unversioned and config.allow_unversioned,
    )


def require_release(lineage: ReleaseLineage, config: PublishConfig) -> GateVerdict:
    verdict = check_release(lineage, config)
    if not verdict.passed:
        raise PublishRefused(verdict.reasons)
    return verdict


def _eval_reasons(lineage: ReleaseLineage) -> list[str]:
    gate = lineage.eval_gate
    reasons = []
    if not gate.passed:
        why = "; ".join(gate.reasons) or "no reason recorded"
        reasons.append(f"the evaluation gate failed ({why}): improve the checkpoint or fix the eval, then re-run")
    if not gate.metrics:
        reasons.append("the evaluation gate recorded no metrics: the card's model-index would be empty")
    for stage in lineage.stages:
        for name, verdict in stage.gates.items():
            if verdict != "passed":
                reasons.append(f"stage {stage.stage} recorded {name}={verdict} (run {stage.run_id})")
    return reasons


def _contract_reasons(lineage: ReleaseLineage) -> list[str]:
    if not lineage.contracts:
        return ["no data-contract results were recorded: the curate run's contract_report.json is missing"]
    reasons = [
        f"contract table {t.stage}/{t.table}: rows_in {t.rows_in} != kept {t.rows_kept} + quarantined "
        f"{t.rows_quarantined}; rows went missing outside the contract checks"
        for t in lineage.contracts
        if not t.balanced
    ]
    reasons += [
        f"great-expectations suite {s.suite} ({s.stage}) failed: {'; '.join(s.failed) or 'no detail recorded'}"
        for s in lineage.suites
        if not s.success
    ]
    return reasons


def _lineage_reasons(lineage: ReleaseLineage, config: PublishConfig) -> list[str]:
    reasons = []
    if not lineage.tracking_uri:
        reasons.append("lineage has no MLflow tracking URI")
    if not lineage.parent_run_id:
        reasons.append("lineage has no MLflow pipeline (parent) run id")
    if lineage.git_sha in ("", UNKNOWN_SHA):
        reasons.append("lineage has no git commit: run the pipeline from a git checkout")
    for name in config.required_stages:
        stage = lineage.stage(name)
        if stage is None:
            reasons.append(f"lineage has no run of stage {name}: pass its MLflow run id")
            continue
        if not stage.run_id:
            reasons.append(f"stage {name} has no MLflow run id")
        if (not stage.outputs or not all(stage.outputs.values())) and not config.allow_unversioned:
            reasons.append(
                f"stage {name} (run {stage.run_id or '?'}) has no DVC output hashes: run it with lineage.dvc=true "
                "inside the DVC repository, or set publish.allow_unversioned=true (the card will record it)"
            )
        if stage.git_sha in ("", UNKNOWN_SHA):
            reasons.append(f"stage {name} (run {stage.run_id or '?'}) has no git commit")
    return reasons
