"""The Ling-2.6 pipeline as Flyte workflows: one graph of stages, run locally or on a cluster at a profile's shape.

    pyflyte --config flyte.config run workflows/pipeline.py ling26_pipeline --profile tiny_cpu
    python -m workflows.cli run --remote --profile ling26_flash        # ling26_flash_pipeline on a cluster

``ling26_pipeline`` is the local workflow: the profile is an input, every stage runs in this process. Each profile
also has its own workflow, ``<profile>_pipeline``, built from that profile's tasks (``workflows.scale``: image,
pods, torchrun shape), because Flyte fixes those when the workflow is compiled.
"""

from __future__ import annotations

from collections.abc import Mapping

from flytekit import PythonFunctionTask, workflow
from flytekit.core.workflow import PythonFunctionWorkflow

from workflows.curation import DOCS_PER_SHARD, curation_graph
from workflows.scale import LOCAL_TASKS, profile_tasks

STAGES = ("curate", "pretrain", "migrate", "post_train", "kpop_rl", "distill", "evaluate", "publish")


def stage_graph(
    t: Mapping[str, PythonFunctionTask], profile: object, overrides: object, extra_documents: object
) -> object:
    """data curation -> base model -> attention migration -> post-training -> KPop RL -> distillation ->
    evaluation with its gate -> publishing, with tasks ``t``. Returns the run summary JSON."""
    config_json = t["resolve_config"](profile=profile, overrides=overrides)
    run_id = t["open_pipeline_run"](config_json=config_json)
    curated = curation_graph(
        t, config_json=config_json, parent_run_id=run_id, extra_documents=extra_documents, docs_per_shard=DOCS_PER_SHARD
    )
    base = t["pretrain"](config_json=config_json, parent_run_id=run_id, curated=curated.out)
    hybrid = t["migrate"](config_json=config_json, parent_run_id=run_id, curated=curated.out, base=base.out)
    instant = t["post_train"](config_json=config_json, parent_run_id=run_id, curated=curated.out, base=hybrid.out)
    ring = t["kpop_rl"](config_json=config_json, parent_run_id=run_id, curated=curated.out, base=instant.out)
    unified = t["distill"](
        config_json=config_json, parent_run_id=run_id, curated=curated.out, instant=instant.out, agentic=ring.out
    )
    evaluation = t["evaluate"](
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
    release = t["publish"](
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
    return t["close_pipeline_run"](
        config_json=config_json,
        parent_run_id=run_id,
        stage_reports=[*upstream_reports, release.report_json],
    )


@workflow
def ling26_pipeline(profile: str = "tiny_cpu", overrides: str = "", extra_documents: str = "") -> str:
    """data curation -> base model -> attention migration -> post-training -> KPop RL -> distillation ->
    evaluation with its gate -> publishing. Returns the run summary JSON."""
    return stage_graph(LOCAL_TASKS, profile, overrides, extra_documents)


def profile_workflow(profile: str) -> PythonFunctionWorkflow:
    """``<profile>_pipeline``: the same graph on ``profile``'s tasks, the profile fixed."""
    tasks = profile_tasks(profile)

    def pipeline(overrides: str = "", extra_documents: str = "") -> str:
        return stage_graph(tasks, profile, overrides, extra_documents)

    pipeline.__name__ = pipeline.__qualname__ = f"{profile}_pipeline"
    pipeline.__doc__ = f"The pipeline on {profile}'s cluster shape (configs.cluster). Returns the run summary JSON."
    return workflow(pipeline)


# Module attributes, one per profile: what `pyflyte run --remote workflows/pipeline.py <name>` and the CLI load.
tiny_cpu_pipeline = profile_workflow("tiny_cpu")
small_gpu_pipeline = profile_workflow("small_gpu")
ling26_flash_pipeline = profile_workflow("ling26_flash")
ling26_1t_pipeline = profile_workflow("ling26_1t")
