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

    from configs import config_hash, to_dict
    from lineage.paths import state_dir
    from tasks.common import load_config, output_dir, stage, version_outputs
    from tasks.migrate.config import migrate_config
    from tasks.migrate.gate import ParityGateFailed
    from tasks.migrate.report import record_migrate
    from tasks.migrate.stage import run_migrate

    cfg = load_config(config_json)
    mcfg = migrate_config(cfg)
    curated_dir, base_dir = Path(curated.download()), Path(base.download())
    out_dir = output_dir("migrate")
    history: dict[str, list] = {}
    with stage("migrate", cfg, parent_run_id) as run:
        # Until PipelineConfig carries the migrate section, its values are logged here.
        run.log_dict(to_dict(mcfg), "migrate_config.json")
        run.set_tags({"migrate_config_hash": config_hash(mcfg)})

        def on_log(name, step, metrics):
            history.setdefault(name, []).append((step, dict(metrics)))
            run.log_metrics({f"{name}.{k}": v for k, v in metrics.items()}, step=step)

        try:
            metrics = run_migrate(
                cfg,
                mcfg,
                curated_dir,
                base_dir,
                out_dir,
                checkpoint_root=state_dir() / "checkpoints" / "migrate",
                on_log=on_log,
            )
        except ParityGateFailed as err:
            run.set_tags({"parity_gate": "failed"})
            record_migrate(run, err.metrics, curated_dir, base_dir, out_dir, history)
            raise
        run.set_tags({"parity_gate": "passed"})
        Deck("migrate", record_migrate(run, metrics, curated_dir, base_dir, out_dir, history))
        report = {
            "stage": "migrate",
            "mlflow_run_id": run.run_id,
            "dvc": version_outputs("migrate", cfg, run),
            "summary_metrics": {k: metrics[k] for k in ("heldout_loss", "base_heldout_loss", "kl_vs_base")},
        }
        report["summary_metrics"].update({f"accuracy_{r['family']}": r["accuracy"] for r in metrics["eval"]})
    return MigrateOutputs(migrated=FlyteDirectory(str(out_dir)), report_json=json.dumps(report, sort_keys=True))
