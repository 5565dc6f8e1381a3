"""Fill a ``ReleaseLineage`` from the MLflow store the stages wrote.

Each stage run carries the tags ``tasks.common`` and ``lineage.runs`` set (``git_sha``, ``git_dirty``,
``flyte_execution_id``, ``dvc.<output path>`` = md5, stage gates such as ``parity_gate``); the curate run keeps
``contract_report.json`` (tables, great-expectations suites, decontamination) and later stages log their
contract counts as ``contracts.<table>.<count>`` metrics. Stage run ids come from the stages' report JSON, not
from the parent run's children: a stage served from Flyte's cache has no run under this execution's parent,
but its report still names the run that computed it.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from lineage.contracts import COUNTS
from publishing.provenance import ContractTable, EvalGate, EvalMetric, ReleaseLineage, StageRecord, SuiteResult

CONTRACT_REPORT = "contract_report.json"
GATE_TAG_SUFFIX = "_gate"


def stage_run_ids_from_reports(report_jsons: Iterable[str]) -> dict[str, str]:
    """``{stage: MLflow run id}`` from the ``report_json`` outputs of the stage tasks."""
    reports = [json.loads(r) for r in report_jsons]
    return {r["stage"]: r.get("mlflow_run_id", "") for r in reports}


def eval_metrics_from_summary(summary: Any, *, dataset: str, checkpoint: str | None = None) -> tuple[EvalMetric, ...]:
    """Model-index numbers from an ``EvalResult`` table (``evals.harness``): accuracy, format rate and mean
    tokens per correct answer of each family for ``checkpoint`` (default: the table's last checkpoint)."""
    checkpoint = checkpoint or summary["checkpoint"].iloc[-1]
    rows = summary[summary["checkpoint"] == checkpoint]
    return tuple(
        EvalMetric(task=row.family, metric=metric, value=float(getattr(row, metric)), dataset=dataset)
        for row in rows.itertuples()
        for metric in ("accuracy", "format_rate", "mean_tokens_correct")
        if getattr(row, metric) == getattr(row, metric)  # NaN: no correct answer to count tokens of
    )


def collect_lineage(
    *,
    tracking_uri: str,
    parent_run_id: str,
    stage_run_ids: Mapping[str, str],
    eval_gate: EvalGate,
    mismatch: Mapping[str, float] | None = None,
) -> ReleaseLineage:
    """The lineage of a release from the pipeline's parent run and the stage runs it depends on."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    parent = client.get_run(parent_run_id).data.tags if parent_run_id else {}
    stages, contracts, suites, decontamination = [], [], [], {}
    for stage, run_id in stage_run_ids.items():
        if not run_id:
            stages.append(StageRecord(stage=stage, run_id="", git_sha="", git_dirty=False))
            continue
        run = client.get_run(run_id)
        stages.append(_stage_record(stage, run_id, run.data.tags))
        report = _contract_report(client, run_id)
        if report is not None:
            contracts += [_table(stage, name, t) for name, t in report.get("tables", {}).items()]
            suites += [_suite(stage, s) for s in report.get("suites", [])]
            decontamination.update(report.get("decontamination", {}))
        contracts += _tables_from_metrics(stage, run.data.metrics)
    return ReleaseLineage(
        tracking_uri=tracking_uri,
        parent_run_id=parent_run_id,
        git_sha=parent.get("git_sha", ""),
        git_dirty=parent.get("git_dirty") == "True",
        flyte_execution_id=parent.get("flyte_execution_id", "none"),
        stages=tuple(stages),
        eval_gate=eval_gate,
        contracts=tuple(contracts),
        suites=tuple(suites),
        decontamination=decontamination,
        mismatch=mismatch,
    )


def _stage_record(stage: str, run_id: str, tags: Mapping[str, str]) -> StageRecord:
    return StageRecord(
        stage=stage,
        run_id=run_id,
        git_sha=tags.get("git_sha", ""),
        # A run that did not record its tree state cannot vouch for it: count it as dirty.
        git_dirty=tags.get("git_dirty", "True") != "False",
        flyte_execution_id=tags.get("flyte_execution_id", "none"),
        outputs={k.removeprefix("dvc."): v for k, v in sorted(tags.items()) if k.startswith("dvc.")},
        gates={k: v for k, v in sorted(tags.items()) if k.endswith(GATE_TAG_SUFFIX)},
    )


def _contract_report(client: Any, run_id: str) -> dict[str, Any] | None:
    if not any(f.path == CONTRACT_REPORT for f in client.list_artifacts(run_id)):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        return json.loads(Path(client.download_artifacts(run_id, CONTRACT_REPORT, tmp)).read_text())


def _table(stage: str, name: str, t: Mapping[str, Any]) -> ContractTable:
    return ContractTable(
        stage=stage,
        table=name,
        **{key: int(t[key]) for key in COUNTS},
        quarantined_by_rule=dict(t.get("quarantined_by_rule", {})),
    )


def _suite(stage: str, s: Mapping[str, Any]) -> SuiteResult:
    return SuiteResult(
        stage=stage,
        suite=s["suite"],
        success=bool(s["success"]),
        evaluated=int(s["evaluated"]),
        failed=tuple(s["failed"]),
    )


def _tables_from_metrics(stage: str, metrics: Mapping[str, float]) -> list[ContractTable]:
    """``contracts.<table>.rows_in|rows_kept|rows_quarantined`` and ``contracts.<table>.quarantined.<rule>``."""
    tables: dict[str, dict[str, Any]] = {}
    for key, value in metrics.items():
        parts = key.split(".", 3)
        if parts[0] != "contracts" or len(parts) < 3:
            continue
        table = tables.setdefault(parts[1], {"quarantined_by_rule": {}})
        if parts[2] == "quarantined" and len(parts) == 4:
            table["quarantined_by_rule"][parts[3]] = int(value)
        elif parts[2] in COUNTS:
            table[parts[2]] = int(value)
    return [_table(stage, name, t) for name, t in sorted(tables.items()) if all(k in t for k in COUNTS)]
