"""``python -m tasks.post_train``: the DVC entry point (``dvc repro post_train``) and a way to run the stage alone.

Reads ``data/curate`` and ``data/migrate``, writes ``data/post_train``, logs a top-level MLflow run.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tasks.cli_common import add_config_arguments, config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.post_train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = config_from_args(args)

    from lineage.paths import stage_dir
    from tasks.common import output_dir, stage
    from tasks.post_train.report import run_recorded

    curated, base, out_dir = stage_dir("curate"), stage_dir("migrate"), output_dir("post_train")
    with stage("post_train", cfg, parent_run_id=None) as run:
        run_recorded(run, cfg, curated, base, out_dir)
    print(f"post_train: wrote {out_dir}; MLflow run {run.run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
