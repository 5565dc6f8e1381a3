"""Kernel tests run on CPU: Triton kernels execute in its interpreter, on tiny shapes.

TRITON_INTERPRET must be set before the first ``import triton``, because ``triton.jit`` decides at
decoration time (when ``kernels.lightning`` is imported) whether a kernel is interpreted. ``setdefault``
lets a GPU machine run these files compiled with ``TRITON_INTERPRET=0``.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest
import torch


@pytest.fixture
def poison_empty(monkeypatch):
    """Fill every floating ``torch.empty`` with NaN, so an output element a kernel never writes fails."""
    real_empty = torch.empty

    def nan_empty(*args, **kwargs):
        x = real_empty(*args, **kwargs)
        if x.is_floating_point():
            x.fill_(float("nan"))
        return x

    monkeypatch.setattr(torch, "empty", nan_empty)


@pytest.fixture
def triton_cpu(monkeypatch, poison_empty):
    """Route ``lightning_attn`` to Triton on CPU tensors, and check the kernels really are interpreted."""
    from triton.runtime.interpreter import InterpretedFunction

    from kernels.lightning import chunk

    if not isinstance(chunk._chunk_fwd_o_kernel, InterpretedFunction):
        pytest.fail(
            "kernels.lightning was imported before TRITON_INTERPRET=1 was set, so its Triton kernels are "
            "compiled for a GPU; set TRITON_INTERPRET=1 in the environment of this CPU test run"
        )
    monkeypatch.setenv("LING26_FORCE_TRITON", "1")
