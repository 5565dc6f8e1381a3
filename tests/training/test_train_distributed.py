"""Two processes under torchrun (gloo on CPU) train like one process with the same global batch."""

import json
import subprocess

import pytest
import torch
from training_toys import lm_loss, markov_tokens, toy_model

from configs.training import EngineConfig, OptimConfig, TrainLoopConfig
from training.builder import build_engine
from training.checkpoint import load_model_weights
from training.data import TokenBatches
from training.launch import run_distributed
from training.loop import train

STEPS = 6


def one_process_losses(tmp_path, backend, zero_stage) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
    """The worker's run in this process: micro-batch 8 instead of 2 ranks x 4."""
    loop = TrainLoopConfig(
        max_steps=STEPS,
        micro_batch_size=8,
        grad_accum_steps=2,
        seq_len=16,
        log_every=1,
        checkpoint_every=4,
        keep_checkpoints=2,
        seed=0,
    )
    engine = build_engine(
        toy_model(seed=0, dropout=0.0),
        EngineConfig(backend=backend, zero_stage=zero_stage),
        OptimConfig(lr=1e-2, warmup_steps=3),
        total_steps=STEPS,
        grad_accum_steps=2,
        micro_batch_size=8,
    )
    losses = {}
    result = train(
        engine,
        TokenBatches(markov_tokens(4000), 16, 8, 0),
        lm_loss,
        loop,
        checkpoint_dir=tmp_path / backend,
        on_log=lambda step, m: losses.__setitem__(str(step), m["loss"]),
    )
    return losses, load_model_weights(result.checkpoints[-1])


def test_two_processes_match_one_with_the_same_global_batch(tmp_path, worker_env):
    out = tmp_path / "two"
    args = [
        "--out",
        str(out),
        "--backend",
        "deepspeed",
        "--backend",
        "torch",
        "--zero-stage",
        "2",
        "--steps",
        str(STEPS),
        "--micro-batch",
        "4",
        "--dropout",
        "0",
    ]
    run_distributed("training_worker:main", 2, args, env={"PYTHONPATH": worker_env["PYTHONPATH"]}, timeout=300)
    for backend, zero_stage in (("deepspeed", 2), ("torch", 0)):
        report = json.loads((out / f"{backend}.json").read_text())
        assert report["world_size"] == 2 and report["resumed_from"] == 0
        losses, weights = one_process_losses(tmp_path / "one", backend, zero_stage)
        assert report["losses"] == pytest.approx(losses, rel=1e-5), backend
        two_weights = load_model_weights(out / backend / f"step-{STEPS:06d}")
        for name, tensor in weights.items():
            torch.testing.assert_close(two_weights[name], tensor, rtol=1e-4, atol=1e-6, msg=f"{backend} {name}")


def test_a_failing_worker_fails_the_launch(worker_env):
    with pytest.raises(subprocess.CalledProcessError):
        run_distributed("training_worker:fail", 2, env={"PYTHONPATH": worker_env["PYTHONPATH"]}, timeout=120)
