"""One device decision (``kernels.dispatch.default_device``), consulted by every place that puts a model.

On a CPU machine the decision is forced to ``meta`` (a device with no storage) through ``LING26_DEVICE``,
the override a run uses to stay on CPU on a GPU machine: whatever consults the decision must then put the
model on ``meta``, while CPU runs, which never set it, stay where they were (``.to("cpu")`` is a no-op there,
so CPU numbers do not move). The GPU-only branch lives in the decision alone: ``tests/kernels`` scans the
project for other ``is_available()`` calls.
"""

import ast
import json
import os
from pathlib import Path

import pytest
import torch
from training_toys import toy_model

import model as model_package
from configs.training import EngineConfig, OptimConfig
from kernels import dispatch
from training.builder import build_engine

REPO = Path(__file__).resolve().parents[2]
# Library code that loads a checkpoint for training or generation, and the loader calls it makes.
LOADERS = {"load_checkpoint", "load_hf"}
LIBRARIES = [
    "training/pretrain.py",
    "training/migrate/run.py",
    "training/post_train/run.py",
    "training/rl/run.py",
    "training/distill/run.py",
    "training/distill/teachers.py",
    "evals/compare.py",
]


@pytest.fixture
def decided_meta(monkeypatch):
    monkeypatch.setenv(dispatch.DEVICE_ENV, "meta")
    return torch.device("meta")


def test_the_decision_is_cpu_here_and_obeys_the_override(monkeypatch):
    monkeypatch.delenv(dispatch.DEVICE_ENV, raising=False)
    assert dispatch.default_device() == torch.device("cpu")
    monkeypatch.setenv(dispatch.DEVICE_ENV, "cpu")
    assert dispatch.default_device() == torch.device("cpu")
    monkeypatch.setenv(dispatch.DEVICE_ENV, "meta")
    assert dispatch.default_device() == torch.device("meta")


def test_place_follows_the_decision(decided_meta):
    module = dispatch.place(toy_model())
    assert {p.device for p in module.parameters()} == {decided_meta}


def test_cpu_placement_leaves_the_weights_untouched(monkeypatch):
    monkeypatch.delenv(dispatch.DEVICE_ENV, raising=False)
    module = toy_model()
    before = {name: t.clone() for name, t in module.state_dict().items()}
    params = list(module.parameters())
    placed = dispatch.place(module)
    assert placed is module and all(a is b for a, b in zip(params, placed.parameters(), strict=True))
    for name, tensor in placed.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_the_torch_engine_trains_where_the_decision_says(decided_meta):
    engine = build_engine(toy_model(), EngineConfig(backend="torch"), OptimConfig(), total_steps=1)
    assert engine.device == decided_meta
    assert {p.device for p in engine.module.parameters()} == {decided_meta}


def test_the_deepspeed_builder_tells_deepspeed_a_cpu_decision(monkeypatch):
    """DeepSpeed picks its accelerator itself; a CPU decision must reach it before it does."""
    monkeypatch.setenv(dispatch.DEVICE_ENV, "cpu")
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    engine = build_engine(toy_model(), EngineConfig(backend="deepspeed"), OptimConfig(), total_steps=1)
    assert os.environ["DS_ACCELERATOR"] == "cpu" and engine.device.type == "cpu"


def test_evaluation_loads_a_checkpoint_onto_the_decided_device(decided_meta, monkeypatch, tmp_path):
    """``evals.compare.load_engine`` (what the evaluate stage runs on every checkpoint) places the model by the
    decision, not where the loader left it: an imported checkpoint is no longer evaluated on CPU on a GPU."""
    from tokenizers import Tokenizer, models

    from evals.compare import load_engine

    Tokenizer(models.WordLevel({"<eos>": 0, "<pad>": 1, "a": 2}, unk_token="<pad>")).save(
        str(tmp_path / "tokenizer.json")
    )
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<eos>", "pad_token": "<pad>"}))
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setattr(model_package, "load_checkpoint", lambda folder, base=None: toy_model())
    engine = load_engine(tmp_path)
    assert engine.device == decided_meta


@pytest.mark.parametrize("path", LIBRARIES)
def test_every_checkpoint_load_in_the_stage_libraries_is_placed(path):
    """Each ``load_checkpoint(...)`` / ``load_hf(...)`` call sits directly inside ``place(...)``; a model built
    in the library itself goes to an engine (which places it) or is placed the same way."""
    tree = ast.parse((REPO / path).read_text())
    placed = {
        id(arg)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "place"
        for arg in node.args
    }
    loads = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in LOADERS
    ]
    assert loads, f"{path} no longer loads a checkpoint: update LIBRARIES"
    unplaced = [node.lineno for node in loads if id(node) not in placed]
    assert not unplaced, f"{path}: checkpoint loaded without kernels.dispatch.place at lines {unplaced}"
