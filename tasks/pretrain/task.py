"""The pre-training stage as a Flyte task.

``LING26_PRETRAIN_NPROC`` (read when the workflow is registered) > 1 runs the task under kfpytorch's
``Elastic`` config (torchrun, one node): locally that starts the worker processes with gloo on CPU, on a
cluster a PyTorchJob; the DeepSpeed engine inside is the same either way.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from flytekit import Deck, task
from flytekit.types.directory import FlyteDirectory

from tasks.common import stage_cache


class PretrainOutputs(NamedTuple):
    base: FlyteDirectory
    report_json: str


def _task_config():
    nproc = int(os.environ.get("LING26_PRETRAIN_NPROC", "1"))
    if nproc <= 1:
        return None
    from flytekitplugins.kfpytorch import Elastic

    return Elastic(nnodes=1, nproc_per_node=nproc)


@task(cache=stage_cache("pretrain"), enable_deck=True, task_config=_task_config())
def pretrain(config_json: str, parent_run_id: str, curated: FlyteDirectory) -> PretrainOutputs:
    """Curated shards -> Ling-2.0 base (trained, or imported via pretrain.base_checkpoint), evaluated and exported."""
    import json
    from pathlib import Path

    from lineage.paths import state_dir
    from tasks.common import load_config, output_dir, stage, version_outputs
    from tasks.pretrain.report import record_pretrain
    from tasks.pretrain.stage import run_pretrain

    cfg = load_config(config_json)
    curated_dir = Path(curated.download())
    out_dir = output_dir("pretrain")
    history: list[tuple[int, dict[str, float]]] = []
    with stage("pretrain", cfg, parent_run_id) as run:

        def on_log(step, metrics):
            history.append((step, dict(metrics)))
            run.log_metrics(metrics, step=step)

        metrics = run_pretrain(
            cfg, curated_dir, out_dir, checkpoint_root=state_dir() / "checkpoints" / "pretrain", on_log=on_log
        )
        Deck("pretrain", record_pretrain(run, metrics, curated_dir, out_dir, history))
        report = {
            "stage": "pretrain",
            "mlflow_run_id": run.run_id,
            "dvc": version_outputs("pretrain", cfg, run),
            "summary_metrics": {k: metrics[k] for k in ("heldout_loss", "unigram_heldout_loss")},
        }
        acc = {r["family"]: r["accuracy"] for r in metrics["eval"]}
        report["summary_metrics"].update({f"accuracy_{k}": v for k, v in acc.items()})
    return PretrainOutputs(base=FlyteDirectory(str(out_dir)), report_json=json.dumps(report, sort_keys=True))
