"""The Ling-2.6 pipeline as one Flyte workflow. Each stage joins here the day it works.

pyflyte --config flyte.config run workflows/pipeline.py ling26_pipeline --profile tiny_cpu
"""

from __future__ import annotations

from flytekit import workflow

from tasks.distill.task import distill
from tasks.evaluate.task import evaluate
from tasks.kpop_rl.task import kpop_rl
from tasks.migrate.task import migrate
from tasks.pipeline_run import close_pipeline_run, open_pipeline_run, resolve_config
from tasks.post_train.task import post_train
from tasks.pretrain.task import pretrain
from tasks.publish.task import publish
from workflows.curation import curation

STAGES = ("curate", "pretrain", "migrate", "post_train", "kpop_rl", "distill", "evaluate", "publish")


@workflow
def ling26_pipeline(profile: str = "tiny_cpu", overrides: str = "", extra_documents: str = "") -> str:
    """data curation -> base model -> attention migration -> post-training -> KPop RL -> distillation ->
    evaluation with its gate -> publishing. Returns the run summary JSON."""
    config_json = resolve_config(profile=profile, overrides=overrides)
    run_id = open_pipeline_run(config_json=config_json)
    curated = curation(config_json=config_json, parent_run_id=run_id, extra_documents=extra_documents)
    base = pretrain(config_json=config_json, parent_run_id=run_id, curated=curated.out)
    hybrid = migrate(config_json=config_json, parent_run_id=run_id, curated=curated.out, base=base.out)
    instant = post_train(config_json=config_json, parent_run_id=run_id, curated=curated.out, base=hybrid.out)
    ring = kpop_rl(config_json=config_json, parent_run_id=run_id, curated=curated.out, base=instant.out)
    unified = distill(
        config_json=config_json, parent_run_id=run_id, curated=curated.out, instant=instant.out, agentic=ring.out
    )
    evaluation = evaluate(
        config_json=config_json,
        parent_run_id=run_id,
        curated=curated.out,
        base=base.out,
        hybrid=hybrid.out,
        instant=instant.out,
        ring=ring.out,
        unified=unified.out,
    )
    upstream_reports = [
        curated.report_json,
        base.report_json,
        hybrid.report_json,
        instant.report_json,
        ring.report_json,
        unified.report_json,
        evaluation.report_json,
    ]
    release = publish(
        config_json=config_json,
        parent_run_id=run_id,
        curated=curated.out,
        base=base.out,
        hybrid=hybrid.out,
        instant=instant.out,
        ring=ring.out,
        unified=unified.out,
        evaluation=evaluation.out,
        stage_reports=upstream_reports,
    )
    return close_pipeline_run(
        config_json=config_json,
        parent_run_id=run_id,
        stage_reports=[*upstream_reports, release.report_json],
    )
