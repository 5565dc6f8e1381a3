"""``python -m tasks <stage>``: run one stage alone, outside Flyte — what ``dvc repro <stage>`` runs.

Reads the profile and overrides from ``params.yaml`` unless given on the command line, the upstream stages'
outputs from ``data/<stage>/``, writes ``data/<stage>/`` and logs a top-level MLflow run.

    python -m tasks curate --extra-documents docs.jsonl
    python -m tasks post_train --overrides 'seed=7'
    python -m tasks <stage> --help
"""

from __future__ import annotations

import argparse
import logging
import sys

from tasks.cli_common import add_config_arguments, config_from_args
from tasks.registry import STAGE_NAMES, stage


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tasks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    for name in STAGE_NAMES:
        declared = stage(name)
        inputs = ", ".join(f"data/{i}" for i in declared.inputs) or "nothing upstream"
        stage_parser = sub.add_parser(
            name,
            help=declared.doc.splitlines()[0],
            description=f"{declared.doc}\n\nReads {inputs}; writes data/{name}.",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_config_arguments(stage_parser)
        for option in declared.options:
            stage_parser.add_argument(
                option.flag, default=option.default, choices=option.choices or None, help=option.help
            )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = config_from_args(args)

    from lineage.paths import stage_dir
    from tasks.stage import StageRefused, execute

    declared = stage(args.stage)
    options = {option.dest: getattr(args, option.dest) for option in declared.options}
    inputs = {name: stage_dir(name) for name in declared.inputs}
    try:
        report, result = execute(declared, cfg, None, inputs, options)
    except StageRefused as err:
        print(f"{args.stage}: refused: {err}", file=sys.stderr)
        return 1
    print(f"{args.stage}: {result.message}; wrote {stage_dir(args.stage)}; MLflow run {report['mlflow_run_id']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
