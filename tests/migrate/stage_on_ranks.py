"""Torchrun worker of the two-rank migration test: run the migration stage (``tasks.stage.execute``) on every rank.

    python -m training.launch --nproc N stage_on_ranks:main CONFIG_JSON CURATED BASE WORKER_DATA_DIR

Ranks > 0 get their own ``LING26_DATA_DIR`` (WORKER_DATA_DIR), so anything a worker wrote as a stage output
would show there; the training checkpoints (``LING26_STATE_DIR``) stay shared, as on one node.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


def main(argv: list[str]) -> None:
    from tasks.common import is_main_process, load_config
    from tasks.migrate.task import STAGE
    from tasks.stage import execute

    config_file, curated, base, worker_data_dir = argv
    torch.set_num_threads(1)
    if not is_main_process():
        os.environ["LING26_DATA_DIR"] = worker_data_dir
    cfg = load_config(Path(config_file).read_text())
    execute(STAGE, cfg, None, {"curate": Path(curated), "pretrain": Path(base)}, {})
