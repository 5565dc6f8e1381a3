"""``python -m tasks.curate``: the DVC entry point (``dvc repro curate``), and a way to run the stage alone.

Reads the profile and overrides from ``params.yaml`` unless given on the command line; writes to
``data/curate`` and logs a top-level MLflow run.
"""

from __future__ import annotations

import argparse
import logging
import sys

from tasks.cli_common import add_config_arguments, config_from_args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tasks.curate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser)
    parser.add_argument("--extra-documents", default="", help="JSONL or parquet of raw {doc_id, source, text} rows")
    parser.add_argument(
        "--on-bad-rows",
        choices=["quarantine", "raise"],
        default="quarantine",
        help="quarantine bad rows to quarantine.parquet (default) or stop at the first one",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = config_from_args(args)

    from tasks.common import output_dir, stage
    from tasks.curate.report import record_curation
    from tasks.curate.stage import run_curation

    out_dir = output_dir("curate")
    with stage("curate", cfg, parent_run_id=None) as run:
        report = run_curation(cfg, out_dir, extra_documents=args.extra_documents or None, on_bad_rows=args.on_bad_rows)
        record_curation(run, report, out_dir, extra_documents=args.extra_documents or None)
    print(f"curate: wrote {out_dir}; MLflow run {run.run_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
