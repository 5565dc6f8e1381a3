"""Checkpoints: an exact round trip of everything a run needs, atomic directories, corruption caught."""

import json
import random
import re

import numpy as np
import pytest
import torch
from training_toys import lm_loss, markov_tokens, same, toy_model

from configs.training import EngineConfig, OptimConfig
from training.builder import build_engine
from training.checkpoint import (
    CheckpointCorrupt,
    capture_rng,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune,
    read_manifest,
    save_checkpoint,
)
from training.data import TokenBatches

TOKENS = markov_tokens(4000)


def make(backend="torch", zero_stage=0, precision="fp32", *, seed=0, offload_optimizer=False):
    engine = build_engine(
        toy_model(seed=seed, dropout=0.2),  # dropout: the continuation depends on the restored RNG
        EngineConfig(backend=backend, zero_stage=zero_stage, precision=precision, offload_optimizer=offload_optimizer),
        OptimConfig(lr=1e-2, warmup_steps=5),  # the resume point sits inside the warmup
        total_steps=10,
        grad_accum_steps=2,
        micro_batch_size=4,
    )
    return engine, TokenBatches(TOKENS, 16, 4, seed=0, rank=engine.rank, world_size=engine.world_size)


def snapshot(state):
    """A detached copy of a nested state (deepcopy refuses DeepSpeed's non-leaf partitions)."""
    if isinstance(state, torch.Tensor):
        return state.detach().clone()
    if isinstance(state, dict):
        return {k: snapshot(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(snapshot(v) for v in state)
    return state


def train_steps(engine, batches, steps):
    losses = []
    for _ in range(steps):
        for _ in range(engine.grad_accum_steps):
            loss, _ = lm_loss(engine, next(batches))
            engine.backward(loss)
            losses.append(loss.item())
        engine.step()
    return losses


@pytest.mark.parametrize(
    ("backend", "zero_stage", "precision", "offload"),
    [
        ("torch", 0, "fp32", False),
        ("deepspeed", 0, "fp32", False),
        ("deepspeed", 0, "bf16", False),
        ("deepspeed", 1, "bf16", False),
        ("deepspeed", 2, "fp32", False),
        ("deepspeed", 3, "fp32", False),
        ("deepspeed", 3, "bf16", True),
    ],
)
def test_round_trip_restores_everything_and_continues_bitwise(tmp_path, backend, zero_stage, precision, offload):
    first, batches = make(backend, zero_stage, precision, offload_optimizer=offload)
    train_steps(first, batches, 3)
    path = save_checkpoint(
        first, tmp_path, step=3, data_state=batches.state_dict(), extra={"note": "hi", "t": torch.ones(2)}
    )
    saved_weights = first.full_state_dict()
    saved_optimizer = snapshot(first.optimizer_state_dict())
    saved_rng = capture_rng(first.device)
    continued = train_steps(first, batches, 3)

    # A different start and disturbed RNG streams: everything that matters must come from the checkpoint.
    second, fresh_batches = make(backend, zero_stage, precision, seed=1, offload_optimizer=offload)
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    step, data_state, extra = load_checkpoint(second, path)
    fresh_batches.load_state_dict(data_state)

    assert step == 3 and second.global_step == 3 and extra["note"] == "hi" and torch.equal(extra["t"], torch.ones(2))
    assert same(second.full_state_dict(), saved_weights)
    assert same(second.optimizer_state_dict(), saved_optimizer)
    assert same(capture_rng(second.device), saved_rng)
    assert fresh_batches.state_dict() == batches.state_dict() | {"cursor": 6}
    assert train_steps(second, fresh_batches, 3) == continued
    assert same(second.full_state_dict(), first.full_state_dict())


@pytest.fixture
def checkpoint(tmp_path):
    engine, batches = make()
    train_steps(engine, batches, 1)
    return engine, save_checkpoint(engine, tmp_path / "ckpt", step=1, data_state=batches.state_dict())


def test_manifest_lists_every_file_with_its_digest(checkpoint):
    _, path = checkpoint
    manifest = read_manifest(path)
    files = {p.name for p in path.iterdir()} - {"manifest.json"}
    assert set(manifest["files"]) == files
    assert {
        "model.safetensors",
        "optimizer-rank0.json",
        "optimizer-rank0.safetensors",
        "rng-rank0.json",
        "scheduler.json",
        "data.json",
        "extra.json",
        "config.json",
    } <= files
    assert manifest["step"] == 1 and manifest["world_size"] == 1
    assert json.loads((path / "config.json").read_text())["optim"]["warmup_steps"] == 5


@pytest.mark.parametrize("name", ["model.safetensors", "optimizer-rank0.safetensors", "rng-rank0.json", "data.json"])
@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_damaged_file_is_detected_and_named(checkpoint, name, damage):
    engine, path = checkpoint
    data = bytearray((path / name).read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[len(data) // 2] ^= 0x01
    (path / name).write_bytes(bytes(data))
    expected = "truncated" if damage == "truncate" else "sha256"
    with pytest.raises(CheckpointCorrupt, match=rf"{re.escape(name)}: .*{expected}"):
        load_checkpoint(engine, path)


def test_missing_file_and_missing_manifest_are_detected(checkpoint):
    engine, path = checkpoint
    (path / "scheduler.json").unlink()
    with pytest.raises(CheckpointCorrupt, match=r"scheduler\.json: missing"):
        load_checkpoint(engine, path)
    (path / "manifest.json").unlink()
    with pytest.raises(CheckpointCorrupt, match=r"manifest\.json: missing"):
        load_checkpoint(engine, path)


def test_incomplete_saves_are_ignored_and_pruned(checkpoint):
    engine, path = checkpoint
    root = path.parent
    for step in (2, 3, 4):
        save_checkpoint(engine, root, step=step, data_state={})
    (root / "step-000005.tmp-abcd").mkdir()  # a save killed before its rename
    (root / "step-000006").mkdir()  # no manifest: never completed
    assert latest_checkpoint(root) == root / "step-000004"
    removed = prune(root, keep=2)
    assert sorted(p.name for p in removed) == ["step-000001", "step-000002", "step-000005.tmp-abcd"]
    assert [p.name for p in list_checkpoints(root)] == ["step-000003", "step-000004"]


def test_existing_step_is_never_overwritten(checkpoint):
    engine, path = checkpoint
    with pytest.raises(FileExistsError):
        save_checkpoint(engine, path.parent, step=1, data_state={})


def test_checkpoint_of_another_layout_is_refused(checkpoint):
    _, path = checkpoint
    other, _ = make("deepspeed", 2)
    with pytest.raises(ValueError, match="was written by a run with"):
        load_checkpoint(other, path)
