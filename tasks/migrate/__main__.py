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

    from lineage.paths import stage_dir
    from tasks.common import output_dir, stage
    from tasks.migrate.gate import ParityGateFailed
    from tasks.migrate.report import run_recorded

    curated, base, out_dir = stage_dir("curate"), stage_dir("pretrain"), output_dir("migrate")
    try:
        with stage("migrate", cfg, parent_run_id=None) as run:
            metrics, _ = run_recorded(run, cfg, curated, base, out_dir)
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
