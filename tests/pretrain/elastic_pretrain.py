"""Subprocess entry of the Elastic test: declare the pre-training task for the config's cluster (its
``cluster.pretrain`` asks for 2 processes, so the task gets the kfpytorch ``Elastic`` config), call it as Flyte's
local execution does, and write what it returned as JSON.

    python elastic_pretrain.py CONFIG_JSON_FILE PARENT_RUN_ID CURATED_DIR OUT_JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    from flytekit.types.directory import FlyteDirectory

    from tasks.common import load_config
    from workflows.scale import profile_task

    config_file, parent_run_id, curated, out_json = argv
    pretrain = profile_task("pretrain", load_config(Path(config_file).read_text()))
    outputs = pretrain(
        config_json=Path(config_file).read_text(), parent_run_id=parent_run_id, curated=FlyteDirectory(curated)
    )
    result = {
        "task_type": pretrain.task_type,
        "task_config": type(pretrain.task_config).__name__,
        "base": outputs.out.path,
        "report": json.loads(outputs.report_json),
    }
    Path(out_json).write_text(json.dumps(result))


# Elastic's workers are spawned: they re-import this file, and must not run the task themselves.
if __name__ == "__main__":
    main(sys.argv[1:])
