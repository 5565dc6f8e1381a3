"""The pre-training stage under DeepSpeed ZeRO-3 on two ranks (torchrun, gloo on CPU).

Under ZeRO-3 every rank holds a shard of each parameter; the stage must gather through the engine before
rank 0 evaluates, merges (WSM) and exports. The exported checkpoint of two ranks must equal one process's
with the same global batch (micro-batch 2 x 2 ranks vs 4 x 1), within fp32 reduction-order round-off.
"""

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_pretrain_stage import SMALL

from configs import resolve, to_json
from training.launch import run_distributed

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ZERO3 = {**SMALL, "pretrain.engine.backend": "deepspeed", "pretrain.engine.zero_stage": 3, "lineage.dvc": False}
# The ZeRO-2 two-rank test's bound (tests/training/test_train_distributed.py): reduction order only.
RTOL, ATOL = 1e-4, 1e-5


def run(root: Path, nproc: int, micro_batch: int, curated: Path) -> tuple[dict, dict]:
    cfg = resolve("tiny_cpu", {**ZERO3, "pretrain.loop.micro_batch_size": micro_batch})
    root.mkdir(parents=True)
    (root / "config.json").write_text(to_json(cfg))
    env = {
        "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]),
        "OMP_NUM_THREADS": "1",
        "LING26_PROGRESS": "0",
        "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".ling26" / "torch_extensions")),
    }
    args = [str(root / "config.json"), str(curated), str(root / "out"), str(root / "ckpt")]
    run_distributed("zero3_pretrain:main", nproc, args, env=env, timeout=600)
    metrics = json.loads((root / "out" / "metrics.json").read_text())
    return metrics, load_file(str(root / "out" / "checkpoint" / "model.safetensors"))


def test_two_rank_zero3_stage_equals_one_process(tmp_path):
    from corpus.curation import run_curation

    run_curation(resolve("tiny_cpu", ZERO3), tmp_path / "curated")
    two, two_weights = run(tmp_path / "two", 2, 2, tmp_path / "curated")
    one, one_weights = run(tmp_path / "one", 1, 4, tmp_path / "curated")
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["merged_checkpoints"] == one["merged_checkpoints"] == 2
    # Rank 1 returned its training metrics after taking part in the gathers; rank 0 evaluated and exported.
    assert json.loads((tmp_path / "two" / "out" / "rank1.json").read_text())["world_size"] == 2
    assert two["heldout_loss"] == pytest.approx(one["heldout_loss"], rel=1e-4)
    assert two["heldout_loss_last"] == pytest.approx(one["heldout_loss_last"], rel=1e-4)
    assert two_weights.keys() == one_weights.keys()
    for name, tensor in two_weights.items():
        torch.testing.assert_close(tensor, one_weights[name], rtol=RTOL, atol=ATOL, msg=name)
