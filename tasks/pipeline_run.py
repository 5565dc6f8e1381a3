"""Tasks that open and close a pipeline execution: config resolution (fails before any work starts)
and the MLflow parent run that every stage nests under."""

from __future__ import annotations

from flytekit import task


@task
def resolve_config(profile: str, overrides: str) -> str:
    """Profile + overrides -> the canonical config JSON every stage receives; bad keys fail here, by name."""
    from configs import resolve
    from tasks.common import dump_config

    return dump_config(resolve(profile, overrides or None))


@task
def open_pipeline_run(config_json: str) -> str:
    """Create the parent MLflow run (never cached: each execution is a new run); returns its id."""
    from configs import config_hash, to_dict
    from lineage.runs import open_pipeline_run as open_run
    from tasks.common import load_config

    cfg = load_config(config_json)
    return open_run(
        experiment=cfg.lineage.experiment,
        configured_uri=cfg.lineage.tracking_uri,
        profile=cfg.profile,
        config_hash=config_hash(cfg),
        config=to_dict(cfg),
        seed=cfg.seed,
    )


@task
def close_pipeline_run(config_json: str, parent_run_id: str, stage_reports: list[str]) -> str:
    """Finish the parent run with a summary of every stage; a stage served from Flyte's cache shows the
    MLflow run of the execution that computed it."""
    import json

    from lineage.runs import close_pipeline_run as close_run
    from tasks.common import load_config

    cfg = load_config(config_json)
    reports = [json.loads(r) for r in stage_reports]
    summary = {
        "stages": len(reports),
        "stage_runs": {r.get("stage", f"stage{i}"): r.get("mlflow_run_id", "") for i, r in enumerate(reports)},
    }
    for report in reports:
        for key, value in report.get("summary_metrics", {}).items():
            summary[f"{report['stage']}.{key}"] = value
    close_run(parent_run_id, configured_uri=cfg.lineage.tracking_uri, summary=summary)
    return json.dumps(summary, sort_keys=True)
