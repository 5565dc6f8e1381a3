"""The one device decision: ``kernels.use_triton``, and that ``import kernels`` is this repo's package."""

import ast
import logging
from pathlib import Path

import pytest
import torch

import kernels
import kernels.dispatch as dispatch

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_import_kernels_resolves_to_this_repo():
    # Hugging Face ships a top-level `kernels` distribution that could shadow ours.
    assert kernels.KERNELS_PACKAGE == "ling26"
    assert Path(kernels.__file__).resolve().parent == REPO_ROOT / "kernels"


def test_cpu_tensor_takes_torch_unless_forced(monkeypatch):
    x = torch.zeros(2)
    monkeypatch.delenv(dispatch.FORCE_TRITON_ENV, raising=False)
    assert not kernels.use_triton(x)
    monkeypatch.setenv(dispatch.FORCE_TRITON_ENV, "1")
    assert kernels.use_triton(x) == dispatch.triton_available()
    monkeypatch.setenv(dispatch.FORCE_TRITON_ENV, "0")
    assert not kernels.use_triton(x)


def test_backend_is_logged_once(monkeypatch, caplog):
    monkeypatch.setattr(dispatch, "_announced", set())
    monkeypatch.delenv(dispatch.FORCE_TRITON_ENV, raising=False)
    with caplog.at_level(logging.INFO, logger=dispatch.__name__):
        for _ in range(3):
            kernels.use_triton(torch.zeros(1))
    messages = [r.getMessage() for r in caplog.records if r.name == dispatch.__name__]
    assert len(messages) == 1 and "torch backend" in messages[0]


PROJECT_PACKAGES = (
    "configs",
    "lineage",
    "data_contracts",
    "environments",
    "model",
    "kernels",
    "training",
    "inference",
    "evals",
    "tasks",
    "workflows",
    "benchmarks",
)
# The one device decision: the training/generation device. Kernel choice looks at the tensor instead.
ALLOWED = {("kernels/dispatch.py", "default_device")}


def _is_available_calls(path):
    tree = ast.parse(path.read_text())
    owners = {}
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for node in ast.walk(fn):
                owners[id(node)] = fn.name
    return [
        (node.lineno, owners.get(id(node)))
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "is_available"
    ]


@pytest.mark.parametrize(
    "path",
    sorted(p for pkg in PROJECT_PACKAGES for p in (REPO_ROOT / pkg).rglob("*.py")),
    ids=lambda p: str(p.relative_to(REPO_ROOT)),
)
def test_only_the_device_decision_asks_cuda_availability(path):
    rel = path.relative_to(REPO_ROOT).as_posix()
    calls = [(line, fn) for line, fn in _is_available_calls(path) if (rel, fn) not in ALLOWED]
    assert not calls, f"{rel} calls is_available() at {calls}; take the device from kernels.dispatch instead"
