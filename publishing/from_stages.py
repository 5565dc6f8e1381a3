"""A release from the pipeline's stage outputs: the checkpoint the evaluation gate judged, the numbers it
judged it on, and the MLflow runs of every stage it came from.

Stage runs come from the stages' reports when the workflow passes them (a stage Flyte served from its cache
has no run under this execution, but its report names the run that computed it). Run alone
(``python -m tasks publish``), each stage's run is the latest finished one whose DVC tag matches the output
recorded in ``dvc.lock``, or, where DVC versioning is off, the latest finished one of that stage.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from publishing.provenance import EvalGate, EvalMetric

if TYPE_CHECKING:
    from configs import PipelineConfig
    from publishing.release import ReleaseResult

# The comparison-table metrics a model card reports, per family (lm_eval and mismatch rows stay in MLflow).
CARD_METRICS = ("accuracy", "format_rate", "tokens_per_correct", "agentic_success", "heldout_loss")
DATASET = "ling26-heldout"


def gate_verdict(evaluate_dir: Path) -> dict[str, Any]:
    path = Path(evaluate_dir) / "gate_verdict.json"
    if not path.exists():
        raise FileNotFoundError(
            f"{path} does not exist: run the evaluate stage first (make run, or python -m tasks evaluate)"
        )
    return json.loads(path.read_text())


def eval_gate(evaluate_dir: Path, evaluate_run_id: str) -> EvalGate:
    """The evaluation gate's verdict with the gated checkpoint's numbers, as the card and publish gate read it."""
    import pandas as pd

    verdict = gate_verdict(evaluate_dir)
    table = pd.read_parquet(Path(evaluate_dir) / "comparison.parquet")
    rows = table[(table["checkpoint"] == verdict["checkpoint"]) & table["metric"].isin(CARD_METRICS)]
    metrics = tuple(
        EvalMetric(task=r.family, metric=r.metric, value=float(r.value), dataset=DATASET)
        for r in rows.dropna(subset=["value"]).itertuples()
    )
    return EvalGate(
        passed=bool(verdict["passed"]), reasons=tuple(verdict["reasons"]), metrics=metrics, run_id=evaluate_run_id
    )


def stage_runs_from_store(
    client: Any, experiment: str, stages: Sequence[str], lock: Mapping[str, str]
) -> dict[str, str]:
    """stage -> MLflow run id, found in the store (see the module docstring); "" where none finished."""
    from lineage.runs import STAGE_TAG

    found = {}
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    for stage in stages:
        query = f"tags.`{STAGE_TAG}` = '{stage}' and attributes.status = 'FINISHED'"
        md5 = lock.get(f"data/{stage}")
        if md5:
            query += f" and tags.`dvc.data/{stage}` = '{md5}'"
        runs = client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1)
        found[stage] = runs[0].info.run_id if runs else ""
    return found


def dvc_lock_outputs(repo: Path) -> dict[str, str]:
    """output path -> md5 of every stage output ``dvc.lock`` records (empty without one)."""
    import yaml

    path = Path(repo) / "dvc.lock"
    if not path.exists():
        return {}
    stages = (yaml.safe_load(path.read_text()) or {}).get("stages", {})
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", [])}


def release_from_stages(
    cfg: PipelineConfig,
    inputs: Mapping[str, Path],
    *,
    run_id: str,
    stage_run_ids: Mapping[str, str],
    out_dir: Path,
) -> ReleaseResult:
    """Publish the checkpoint ``inputs["evaluate"]``'s gate judged. ``run_id`` is the publish stage's own run."""
    import mlflow

    from lineage.paths import tracking_uri
    from publishing.collect import collect_lineage
    from publishing.release import publish_release

    uri = tracking_uri(cfg.lineage.tracking_uri)
    client = mlflow.MlflowClient(tracking_uri=uri)
    verdict = gate_verdict(inputs["evaluate"])
    checkpoint_stage = verdict["checkpoint"]
    if checkpoint_stage not in inputs:
        raise ValueError(
            f"the evaluation gate judged {checkpoint_stage!r}, which is not an input of publish: {list(inputs)}"
        )
    mismatch_path = inputs[checkpoint_stage] / "mismatch_summary.json"
    mismatch = json.loads(mismatch_path.read_text()) if mismatch_path.exists() else None
    # The pipeline run the release belongs to: this run's parent, or (run alone) the evaluation's.
    parent = client.get_run(run_id).data.tags.get("mlflow.parentRunId")
    if not parent and stage_run_ids.get("evaluate"):
        parent = client.get_run(stage_run_ids["evaluate"]).data.tags.get("mlflow.parentRunId", "")
    lineage = collect_lineage(
        tracking_uri=uri,
        parent_run_id=parent or "",
        stage_run_ids=dict(stage_run_ids),
        eval_gate=eval_gate(inputs["evaluate"], stage_run_ids.get("evaluate", "")),
        mismatch={k: float(v) for k, v in mismatch.items() if isinstance(v, int | float)} if mismatch else None,
    )
    return publish_release(
        checkpoint=inputs[checkpoint_stage] / "checkpoint",
        lineage=lineage,
        config=cfg.publish,
        run_id=run_id,
        registered_model=cfg.lineage.registered_model,
        work_dir=out_dir,
    )
