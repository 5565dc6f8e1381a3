"""The KPop RL stage: the agentic "Ring" half of the recipe on the post-trained hybrid."""

from __future__ import annotations

from flytekit import task
from flytekit.types.directory import FlyteDirectory

from tasks.common import stage_cache
from tasks.stage import Stage, StageOutputs, run_flyte_stage

STAGE = Stage(
    name="kpop_rl",
    doc="Post-trained hybrid -> asynchronous multi-environment RL (coding, search, tool use, workflow) with "
    "KPop mismatch correction, evaluated per family before and after.",
    inputs=("curate", "post_train"),
    body="tasks.kpop_rl.report:run_recorded",
)


@task(cache=stage_cache("kpop_rl"), enable_deck=True)
def kpop_rl(config_json: str, parent_run_id: str, curated: FlyteDirectory, base: FlyteDirectory) -> StageOutputs:
    """Post-trained hybrid -> asynchronous multi-environment RL with KPop mismatch correction."""
    return run_flyte_stage(STAGE, config_json, parent_run_id, inputs={"curate": curated, "post_train": base})
