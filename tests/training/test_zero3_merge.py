"""Under ZeRO-3 each rank holds a shard of every parameter, so weights may move only through the engine.

Two ranks (torchrun, gloo on CPU, DeepSpeed ZeRO-3) train the toy LM and then do what the pre-training and
migration stages do after training (``training.merge.load_merged``: the WSM merge loaded through the engine,
then the engine's full module). The result must equal one process with the same global batch, on every
rank. The old path, ``module.load_state_dict`` on rank 0, must not pass silently.
"""

import json

import pytest
import torch
from safetensors.torch import load_file

from training.launch import run_distributed
from training.merge import merge_checkpoints

# Two ranks reduce in a different order than one process with twice the micro-batch: fp32 round-off only,
# the same bound the ZeRO-2 two-rank test uses (tests/training/test_train_distributed.py).
RTOL, ATOL = 1e-4, 1e-6


def launch(out, nproc, micro_batch, worker_env):
    args = ["--out", str(out), "--micro-batch", str(micro_batch)]
    run_distributed(
        "training_worker:zero3_merge", nproc, args, env={"PYTHONPATH": worker_env["PYTHONPATH"]}, timeout=400
    )
    return json.loads((out / "report.json").read_text())


def test_two_rank_zero3_merge_goes_through_the_engine(tmp_path, worker_env):
    two = launch(tmp_path / "two", 2, 4, worker_env)
    one = launch(tmp_path / "one", 1, 8, worker_env)
    assert two["world_size"] == 2 and one["world_size"] == 1
    assert two["merged"] == one["merged"] == ["step-000004", "step-000006"]
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5)
    # ZeRO-3's module is not the full model; a plain load into it fails instead of loading shards wrongly.
    assert two["old_path"].startswith("raised"), two["old_path"]
    assert not two["module_is_engine_module"]

    # What was loaded is the mean of the checkpoints the run wrote (gathered full weights, by the main rank).
    expected = merge_checkpoints([tmp_path / "two" / "checkpoints" / name for name in two["merged"]])
    reference = load_file(str(tmp_path / "one" / "module-rank0.safetensors"))
    for rank in (0, 1):
        weights = load_file(str(tmp_path / "two" / f"module-rank{rank}.safetensors"))
        assert weights.keys() == expected.keys() == reference.keys()
        for name, tensor in weights.items():
            torch.testing.assert_close(tensor, expected[name], rtol=0, atol=0, msg=f"rank {rank} {name} vs merge")
            torch.testing.assert_close(tensor, reference[name], rtol=RTOL, atol=ATOL, msg=f"rank {rank} {name}")
