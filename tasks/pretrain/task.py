"""The pre-training stage: curated shards -> the Ling-2.0 base (trained, or imported), evaluated and exported.

Locally the task runs in this process. A profile whose ``cluster.pretrain`` asks for several processes gets this
task re-declared under kfpytorch's ``Elastic`` config (``workflows.scale``): torchrun starts the workers (gloo
on CPU, NCCL on GPUs; a PyTorchJob when ``nnodes > 1``) and every worker runs this task's body: all ranks train
together, rank 0 alone then evaluates, exports and writes lineage (MLflow, DVC), and Elastic returns rank 0's
outputs.
"""

from __future__ import annotations

from flytekit import task
from flytekit.types.directory import FlyteDirectory

from tasks.common import stage_cache
from tasks.stage import Stage, StageOutputs, run_flyte_stage

STAGE = Stage(
    name="pretrain",
    doc="Curated shards -> Ling-2.0 base (trained, or imported via pretrain.base_checkpoint), evaluated and exported.",
    inputs=("curate",),
    body="tasks.pretrain.report:run_recorded",
    worker_body="tasks.pretrain.report:train_beside_rank0",
)


@task(cache=stage_cache("pretrain"), enable_deck=True)
def pretrain(config_json: str, parent_run_id: str, curated: FlyteDirectory) -> StageOutputs:
    """Curated shards -> Ling-2.0 base (trained, or imported via pretrain.base_checkpoint), evaluated and exported."""
    return run_flyte_stage(STAGE, config_json, parent_run_id, inputs={"curate": curated})
