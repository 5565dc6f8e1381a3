"""The post-training stage as a Flyte task."""

from __future__ import annotations

from typing import NamedTuple

from flytekit import Deck, task
from flytekit.types.directory import FlyteDirectory

from tasks.common import stage_cache


class PostTrainOutputs(NamedTuple):
    instant: FlyteDirectory
    report_json: str


@task(cache=stage_cache("post_train"), enable_deck=True)
def post_train(config_json: str, parent_run_id: str, curated: FlyteDirectory, base: FlyteDirectory) -> PostTrainOutputs:
    """Base checkpoint -> SFT (shortest-correct) -> LPO RL (Evo-CoT) -> preference alignment, evaluated per phase."""
    import json
    from pathlib import Path

    from tasks.common import load_config, output_dir, stage, version_outputs
    from tasks.post_train.report import run_recorded

    cfg = load_config(config_json)
    curated_dir, base_dir = Path(curated.download()), Path(base.download())
    out_dir = output_dir("post_train")
    with stage("post_train", cfg, parent_run_id) as run:
        metrics, deck = run_recorded(run, cfg, curated_dir, base_dir, out_dir)
        Deck("post_train", deck)
        final = metrics["final_phase"]
        report = {
            "stage": "post_train",
            "mlflow_run_id": run.run_id,
            "dvc": version_outputs("post_train", cfg, run),
            "summary_metrics": {
                k.removeprefix(f"eval.{final}."): v for k, v in metrics.items() if k.startswith(f"eval.{final}.all.")
            },
        }
    return PostTrainOutputs(instant=FlyteDirectory(str(out_dir)), report_json=json.dumps(report, sort_keys=True))
