"""The migration stage as a Flyte task. A failed parity gate fails the task (after logging what it measured),
so nothing downstream consumes a migrated model that missed the base."""

from __future__ import annotations

from typing import NamedTuple

from flytekit import Deck, task
from flytekit.types.directory import FlyteDirectory

from tasks.common import stage_cache


class MigrateOutputs(NamedTuple):
    migrated: FlyteDirectory
    report_json: str


@task(cache=stage_cache("migrate"), enable_deck=True)
def migrate(config_json: str, parent_run_id: str, curated: FlyteDirectory, base: FlyteDirectory) -> MigrateOutputs:
    """Ling-2.0 base -> Lightning + MLA hybrid (four-step migration + continued pre-training), parity-gated."""
    import json
    from pathlib import Path

    from tasks.common import load_config, output_dir, stage, version_outputs
    from tasks.migrate.report import run_recorded

    cfg = load_config(config_json)
    curated_dir, base_dir = Path(curated.download()), Path(base.download())
    out_dir = output_dir("migrate")
    with stage("migrate", cfg, parent_run_id) as run:
        metrics, deck = run_recorded(run, cfg, curated_dir, base_dir, out_dir)
        Deck("migrate", deck)
        report = {
            "stage": "migrate",
            "mlflow_run_id": run.run_id,
            "dvc": version_outputs("migrate", cfg, run),
            "summary_metrics": {k: metrics[k] for k in ("heldout_loss", "base_heldout_loss", "kl_vs_base")},
        }
        report["summary_metrics"].update({f"accuracy_{r['family']}": r["accuracy"] for r in metrics["eval"]})
    return MigrateOutputs(migrated=FlyteDirectory(str(out_dir)), report_json=json.dumps(report, sort_keys=True))
