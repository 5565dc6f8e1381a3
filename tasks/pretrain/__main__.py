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

    from lineage.paths import stage_dir, state_dir
    from tasks.common import output_dir, stage
    from tasks.pretrain.report import record_pretrain
    from tasks.pretrain.stage import run_pretrain

    curated, out_dir = stage_dir("curate"), output_dir("pretrain")
    history: list = []
    with stage("pretrain", cfg, parent_run_id=None) as run:

        def on_log(step, metrics):
            history.append((step, dict(metrics)))
            run.log_metrics(metrics, step=step)

        metrics = run_pretrain(
            cfg, curated, out_dir, checkpoint_root=state_dir() / "checkpoints" / "pretrain", on_log=on_log
        )
        record_pretrain(run, metrics, curated, out_dir, history)
    print(
        f"pretrain: wrote {out_dir}; held-out loss {metrics['heldout_loss']:.3f} "
        f"(unigram {metrics['unigram_heldout_loss']:.3f}); MLflow run {run.run_id}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
