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


@pytest.mark.parametrize("path", sorted((REPO_ROOT / "kernels").rglob("*.py")), ids=lambda p: p.name)
def test_no_kernel_module_asks_cuda_availability(path):
    # Kernel choice goes through use_triton(x), which looks at the tensor, never at the machine.
    calls = [
        node.lineno
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "is_available"
    ]
    assert not calls, f"{path} calls is_available() at lines {calls}"
