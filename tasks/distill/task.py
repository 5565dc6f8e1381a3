"""The distillation stage: the specialists (KPop-RL agentic model, post_train's instant model) into one
instant model."""

from __future__ import annotations

from flytekit import task
from flytekit.types.directory import FlyteDirectory

from tasks.common import stage_cache
from tasks.stage import Stage, StageOutputs, run_flyte_stage

STAGE = Stage(
    name="distill",
    doc="Specialists -> one instant model: logit distillation on verified teacher samples, then on-policy distillation.",
    inputs=("curate", "post_train", "kpop_rl"),
    body="tasks.distill.report:run_recorded",
)


@task(cache=stage_cache("distill"), enable_deck=True)
def distill(
    config_json: str, parent_run_id: str, curated: FlyteDirectory, instant: FlyteDirectory, agentic: FlyteDirectory
) -> StageOutputs:
    """Specialists -> one instant model: logit distillation on verified teacher samples, then on-policy distillation."""
    return run_flyte_stage(
        STAGE, config_json, parent_run_id, inputs={"curate": curated, "post_train": instant, "kpop_rl": agentic}
    )
