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
    from tasks.post_train.report import record_post_train
    from tasks.post_train.stage import run_post_train

    cfg = load_config(config_json)
    curated_dir, base_dir = Path(curated.download()), Path(base.download())
    out_dir = output_dir("post_train")
    history: dict[str, list] = {}
    with stage("post_train", cfg, parent_run_id) as run:
        offsets = {"eval": 0, "sft": 0, "rl": 10_000, "preference": 20_000}

        def on_log(phase, step, metrics):
            history.setdefault(phase, []).append((step, dict(metrics)))
            run.log_metrics(
                {f"{phase}.{k}" if not k.startswith("eval.") else k: v for k, v in metrics.items()},
                step=offsets.get(phase, 0) + step,
            )

        metrics = run_post_train(cfg, curated_dir, base_dir, out_dir, on_log=on_log)
        Deck("post_train", record_post_train(run, metrics, curated_dir, base_dir, out_dir, history))
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
