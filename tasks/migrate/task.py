"""The migration stage. A failed parity gate fails the task (after logging what it measured), so nothing
downstream consumes a migrated model that missed the base.

As for pre-training, a profile whose ``cluster.migrate`` asks for several processes runs this task under
kfpytorch's ``Elastic``: every rank converts and trains (``train_beside_rank0`` on ranks > 0), rank 0 alone
evaluates, exports and writes lineage."""

from __future__ import annotations

from flytekit import task
from flytekit.types.directory import FlyteDirectory

from tasks.common import stage_cache
from tasks.stage import Stage, StageOutputs, run_flyte_stage

STAGE = Stage(
    name="migrate",
    doc="Ling-2.0 base -> Lightning + MLA hybrid (four-step migration + continued pre-training), parity-gated.",
    inputs=("curate", "pretrain"),
    body="tasks.migrate.report:run_recorded",
    worker_body="tasks.migrate.report:train_beside_rank0",
)


@task(cache=stage_cache("migrate"), enable_deck=True)
def migrate(config_json: str, parent_run_id: str, curated: FlyteDirectory, base: FlyteDirectory) -> StageOutputs:
    """Ling-2.0 base -> Lightning + MLA hybrid (four-step migration + continued pre-training), parity-gated."""
    return run_flyte_stage(STAGE, config_json, parent_run_id, inputs={"curate": curated, "pretrain": base})
