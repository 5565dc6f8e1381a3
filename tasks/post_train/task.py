"""The post-training stage: the instant "Ling" model."""

from __future__ import annotations

from flytekit import task
from flytekit.types.directory import FlyteDirectory

from tasks.common import stage_cache
from tasks.stage import Stage, StageOutputs, run_flyte_stage

STAGE = Stage(
    name="post_train",
    doc="Hybrid checkpoint -> SFT (shortest-correct) -> LPO RL (Evo-CoT) -> preference alignment, evaluated per phase.",
    inputs=("curate", "migrate"),
    body="tasks.post_train.report:run_recorded",
)


@task(cache=stage_cache("post_train"), enable_deck=True)
def post_train(config_json: str, parent_run_id: str, curated: FlyteDirectory, base: FlyteDirectory) -> StageOutputs:
    """Hybrid checkpoint -> SFT (shortest-correct) -> LPO RL (Evo-CoT) -> preference alignment, evaluated per phase."""
    return run_flyte_stage(STAGE, config_json, parent_run_id, inputs={"curate": curated, "migrate": base})
