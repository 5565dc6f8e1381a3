"""``python -m tasks.migrate``: the DVC entry point (``dvc repro migrate``) and a way to run the stage alone.

Reads ``data/curate`` and ``data/pretrain``, writes ``data/migrate``, logs a top-level MLflow run. Exits 1 when
the parity gate fails (metrics.json still written).
"""

from __future__ import annotations

import argparse
import logging
import sys

from tasks.cli_common import add_config_arguments, config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.migrate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = config_from_args(args)

    from lineage.paths import stage_dir, state_dir
    from tasks.common import output_dir, stage
    from tasks.migrate.config import migrate_config
    from tasks.migrate.gate import ParityGateFailed
    from tasks.migrate.report import record_migrate
    from tasks.migrate.stage import run_migrate

    curated, base, out_dir = stage_dir("curate"), stage_dir("pretrain"), output_dir("migrate")
    history: dict[str, list] = {}
    try:
        with stage("migrate", cfg, parent_run_id=None) as run:

            def on_log(name, step, metrics):
                history.setdefault(name, []).append((step, dict(metrics)))
                run.log_metrics({f"{name}.{k}": v for k, v in metrics.items()}, step=step)

            try:
                metrics = run_migrate(
                    cfg,
                    migrate_config(cfg),
                    curated,
                    base,
                    out_dir,
                    checkpoint_root=state_dir() / "checkpoints" / "migrate",
                    on_log=on_log,
                )
            except ParityGateFailed as err:
                # Logged, then re-raised so that the MLflow run ends FAILED.
                run.set_tags({"parity_gate": "failed"})
                record_migrate(run, err.metrics, curated, base, out_dir, history)
                raise
            run.set_tags({"parity_gate": "passed"})
            record_migrate(run, metrics, curated, base, out_dir, history)
    except ParityGateFailed as err:
        print(f"migrate: {err}; metrics in {out_dir / 'metrics.json'}; MLflow run {run.run_id}", file=sys.stderr)
        return 1
    print(
        f"migrate: wrote {out_dir}; held-out loss {metrics['heldout_loss']:.3f} (base "
        f"{metrics['base_heldout_loss']:.3f}), KL vs base {metrics['kl_vs_base']:.4f}; MLflow run {run.run_id}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
