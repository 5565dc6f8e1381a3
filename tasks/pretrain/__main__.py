"""``python -m tasks.pretrain``: the DVC entry point (``dvc repro pretrain``) and a way to run the stage alone.

Reads ``data/curate`` (the curation stage's outputs), writes ``data/pretrain``, logs a top-level MLflow run.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tasks.cli_common import add_config_arguments, config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.pretrain", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = config_from_args(args)

    from lineage.paths import stage_dir
    from tasks.common import output_dir, stage
    from tasks.pretrain.report import run_recorded

    curated, out_dir = stage_dir("curate"), output_dir("pretrain")
    with stage("pretrain", cfg, parent_run_id=None) as run:
        metrics, _ = run_recorded(run, cfg, curated, out_dir)
    print(
        f"pretrain: wrote {out_dir}; held-out loss {metrics['heldout_loss']:.3f} "
        f"(unigram {metrics['unigram_heldout_loss']:.3f}); MLflow run {run.run_id}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
