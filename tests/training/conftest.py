"""Training tests run on CPU: DeepSpeed picks its CPU accelerator and gloo by itself.

DeepSpeed builds a C++ op (shared-memory comm) on first use; TORCH_EXTENSIONS_DIR keeps it with the run
state so it is built once, not per test. One intra-op thread keeps runs deterministic and leaves the
second core to the subprocess tests.
"""

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent

os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(REPO / ".ling26" / "torch_extensions"))


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def worker_env() -> dict[str, str]:
    """Environment for subprocess workers: the repo and this folder importable, no progress bars, one thread."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]),
        "LING26_PROGRESS": "0",
        "OMP_NUM_THREADS": "1",
    }
