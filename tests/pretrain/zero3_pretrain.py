"""Torchrun worker of the ZeRO-3 stage test: run the pre-training stage library on every rank.

python -m training.launch --nproc N zero3_pretrain:main CONFIG_JSON CURATED OUT CHECKPOINT_ROOT
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from configs import PipelineConfig, from_dict
from training.pretrain import run_pretrain


def main(argv: list[str]) -> None:
    config, curated, out, checkpoint_root = argv
    torch.set_num_threads(1)
    metrics = run_pretrain(
        from_dict(PipelineConfig, json.loads(Path(config).read_text())),
        Path(curated),
        Path(out),
        checkpoint_root=Path(checkpoint_root),
    )
    Path(out).mkdir(parents=True, exist_ok=True)
    (Path(out) / f"rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(metrics, default=float))
