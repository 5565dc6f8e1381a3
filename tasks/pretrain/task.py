"""The pre-training stage as a Flyte task.

``LING26_PRETRAIN_NPROC`` (read when the workflow is registered) > 1 runs the task under kfpytorch's
``Elastic`` config (torchrun, one node): locally that starts the worker processes with gloo on CPU, on a
cluster a PyTorchJob; the DeepSpeed engine inside is the same either way. Every worker runs this task's
body: all ranks train together, rank 0 alone then evaluates, exports and writes lineage (MLflow, DVC),
and Elastic returns rank 0's outputs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from flytekit import Deck, task
from flytekit.types.directory import FlyteDirectory

from tasks.common import stage_cache

if TYPE_CHECKING:
    from configs import PipelineConfig


class PretrainOutputs(NamedTuple):
    base: FlyteDirectory
    report_json: str


def _task_config():
    nproc = int(os.environ.get("LING26_PRETRAIN_NPROC", "1"))
    if nproc <= 1:
        return None
    from flytekitplugins.kfpytorch import Elastic

    return Elastic(nnodes=1, nproc_per_node=nproc)


def _train_beside_rank0(cfg: PipelineConfig, curated_dir: Path) -> None:
    """A rank > 0: train in lockstep with rank 0 (its collectives need every rank), touch nothing else.

    Elastic drops the return value of every rank but 0, so there is nothing to return.
    """
    from lineage.paths import stage_dir
    from tasks.pretrain.stage import pretrain_checkpoint_root, run_pretrain

    if cfg.pretrain.base_checkpoint:
        return  # an imported base is not trained: rank 0 alone evaluates and exports it
    run_pretrain(cfg, curated_dir, stage_dir("pretrain"), checkpoint_root=pretrain_checkpoint_root())


def _train_and_record(cfg: PipelineConfig, parent_run_id: str, curated_dir: Path) -> PretrainOutputs:
    """Rank 0 (or the only process): train, evaluate and export, inside the stage's nested MLflow run."""
    import json

    from tasks.common import output_dir, stage, version_outputs
    from tasks.pretrain.report import run_recorded

    out_dir = output_dir("pretrain")
    with stage("pretrain", cfg, parent_run_id) as run:
        metrics, deck = run_recorded(run, cfg, curated_dir, out_dir)
        Deck("pretrain", deck)
        report = {
            "stage": "pretrain",
            "mlflow_run_id": run.run_id,
            "dvc": version_outputs("pretrain", cfg, run),
            "summary_metrics": {k: metrics[k] for k in ("heldout_loss", "unigram_heldout_loss")},
        }
        acc = {r["family"]: r["accuracy"] for r in metrics["eval"]}
        report["summary_metrics"].update({f"accuracy_{k}": v for k, v in acc.items()})
    return PretrainOutputs(base=FlyteDirectory(str(out_dir)), report_json=json.dumps(report, sort_keys=True))


def _leave_launched_world() -> None:
    """Workers of a launcher end with ``destroy_process_group()``. Unlike ``training.launch`` they cannot
    ``os._exit`` afterwards: Elastic still has to carry their return value to its agent. A world of one
    that DeepSpeed started inside a plain process stays, for the stages after this one."""
    from training.engine import launched_world_size
    from training.launch import leave_process_group

    if launched_world_size() > 1:
        leave_process_group()


@task(cache=stage_cache("pretrain"), enable_deck=True, task_config=_task_config())
def pretrain(config_json: str, parent_run_id: str, curated: FlyteDirectory) -> PretrainOutputs:
    """Curated shards -> Ling-2.0 base (trained, or imported via pretrain.base_checkpoint), evaluated and exported."""
    from tasks.common import is_main_process, load_config

    cfg = load_config(config_json)
    curated_dir = Path(curated.download())
    if is_main_process():
        outputs = _train_and_record(cfg, parent_run_id, curated_dir)
    else:
        outputs = _train_beside_rank0(cfg, curated_dir)
    _leave_launched_world()
    return outputs
