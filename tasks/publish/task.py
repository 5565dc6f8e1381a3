"""The publish stage: the checkpoint the evaluation gate passed, released as a Hugging Face model (a dry run
into a local folder by default), registered in MLflow, with a card that traces it to its data and code."""

from __future__ import annotations

from flytekit import task
from flytekit.types.directory import FlyteDirectory

from tasks.common import stage_cache
from tasks.stage import CliOption, Stage, StageOutputs, run_flyte_stage

STAGE = Stage(
    name="publish",
    doc="The gated checkpoint -> HF folder + lineage card -> MLflow registry (candidate, champion) -> Hub or dry run.",
    # The checkpoint stages, so that whichever the gate judged is at hand, and the evaluation with its verdict.
    inputs=("curate", "pretrain", "migrate", "post_train", "kpop_rl", "distill", "evaluate"),
    body="tasks.publish.report:run_recorded",
    options=(
        CliOption(
            flag="--stage-reports",
            help="JSON list of the stage tasks' reports naming their MLflow runs (the workflow passes them); "
            "empty: find each stage's run in the MLflow store through dvc.lock",
        ),
    ),
)


@task(cache=stage_cache("publish"), enable_deck=True)
def publish(
    config_json: str,
    parent_run_id: str,
    curated: FlyteDirectory,
    base: FlyteDirectory,
    hybrid: FlyteDirectory,
    instant: FlyteDirectory,
    ring: FlyteDirectory,
    unified: FlyteDirectory,
    evaluation: FlyteDirectory,
    stage_reports: list[str],
) -> StageOutputs:
    """The gated checkpoint -> HF folder + lineage card -> MLflow registry (candidate, champion) -> Hub or dry run."""
    import json

    inputs = {
        "curate": curated,
        "pretrain": base,
        "migrate": hybrid,
        "post_train": instant,
        "kpop_rl": ring,
        "distill": unified,
        "evaluate": evaluation,
    }
    options = {"stage_reports": json.dumps(stage_reports)}
    return run_flyte_stage(STAGE, config_json, parent_run_id, inputs=inputs, options=options)
