"""The evaluation stage. A failed gate fails the task (after recording the comparison and the verdict), so
nothing downstream publishes a checkpoint that missed it."""

from __future__ import annotations

from flytekit import task
from flytekit.types.directory import FlyteDirectory

from tasks.common import stage_cache
from tasks.stage import Stage, StageOutputs, run_flyte_stage

STAGE = Stage(
    name="evaluate",
    doc="Every checkpoint of the run on the same held-out prompts, sampling and seeds; the gate on the last one.",
    # Every input after curate is a checkpoint, in pipeline order: the last is gated against the one before.
    inputs=("curate", "pretrain", "migrate", "post_train", "kpop_rl", "distill"),
    body="tasks.evaluate.report:run_recorded",
)


@task(cache=stage_cache("evaluate"), enable_deck=True)
def evaluate(
    config_json: str,
    parent_run_id: str,
    curated: FlyteDirectory,
    base: FlyteDirectory,
    hybrid: FlyteDirectory,
    instant: FlyteDirectory,
    ring: FlyteDirectory,
    unified: FlyteDirectory,
) -> StageOutputs:
    """Every checkpoint of the run on the same held-out prompts, sampling and seeds; the gate on the last one."""
    inputs = {
        "curate": curated,
        "pretrain": base,
        "migrate": hybrid,
        "post_train": instant,
        "kpop_rl": ring,
        "distill": unified,
    }
    return run_flyte_stage(STAGE, config_json, parent_run_id, inputs=inputs)
