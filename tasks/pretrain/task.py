"""The pre-training stage: curated shards -> the Ling-2.0 base (trained, or imported), evaluated and exported.

``LING26_PRETRAIN_NPROC`` (read when the workflow is registered) > 1 runs the task under kfpytorch's
``Elastic`` config (torchrun, one node): locally that starts the worker processes with gloo on CPU, on a
cluster a PyTorchJob; the DeepSpeed engine inside is the same either way. Every worker runs this task's
body: all ranks train together, rank 0 alone then evaluates, exports and writes lineage (MLflow, DVC),
and Elastic returns rank 0's outputs.
"""

from __future__ import annotations

import os

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


def _task_config():
    nproc = int(os.environ.get("LING26_PRETRAIN_NPROC", "1"))
    if nproc <= 1:
        return None
    from flytekitplugins.kfpytorch import Elastic

    return Elastic(nnodes=1, nproc_per_node=nproc)


@task(cache=stage_cache("pretrain"), enable_deck=True, task_config=_task_config())
def pretrain(config_json: str, parent_run_id: str, curated: FlyteDirectory) -> StageOutputs:
    """Curated shards -> Ling-2.0 base (trained, or imported via pretrain.base_checkpoint), evaluated and exported."""
    return run_flyte_stage(STAGE, config_json, parent_run_id, inputs={"curate": curated})
