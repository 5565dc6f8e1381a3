"""The one place that decides, for the whole project, whether a kernel runs in Triton or in torch.

No other module asks ``torch.cuda.is_available()`` to choose a kernel: call ``use_triton(x)`` with the
tensor the kernel will read. ``LING26_FORCE_TRITON=1`` takes the Triton path for any tensor; on a CPU it
only works together with ``TRITON_INTERPRET=1`` (set before ``triton`` is imported), which is how the
CPU tests exercise the Triton kernels.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os

import torch

logger = logging.getLogger(__name__)

FORCE_TRITON_ENV = "LING26_FORCE_TRITON"
# Overrides the device decision, e.g. "cpu" on a GPU machine.
DEVICE_ENV = "LING26_DEVICE"

_announced: set[str] = set()


@functools.cache
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def use_triton(x: torch.Tensor) -> bool:
    """True iff the Triton kernels should run on ``x``: it is on CUDA (or the env forces Triton) and
    ``triton`` is importable. Logs the chosen backend once per backend and process."""
    forced = os.environ.get(FORCE_TRITON_ENV, "") == "1"
    chosen = (x.is_cuda or forced) and triton_available()
    if chosen:
        backend, reason = "triton", f"{FORCE_TRITON_ENV}=1" if forced else f"tensor on {x.device}"
    else:
        backend = "torch"
        reason = "triton not importable" if not triton_available() else f"tensor on {x.device}"
    if backend not in _announced:
        _announced.add(backend)
        logger.info("kernels: %s backend (%s)", backend, reason)
    return chosen


def default_device() -> torch.device:
    """The device the project trains and generates on: this worker's CUDA device when there is one, else CPU.

    This is the one place that asks; every stage takes its device from here (or from a tensor it is
    given), so a CPU run and a GPU run differ only in what this returns. ``LING26_DEVICE`` overrides it
    (``LING26_DEVICE=cpu`` keeps a run on the CPU of a GPU machine). Under a launcher each local worker
    takes the GPU of its ``LOCAL_RANK``, as DeepSpeed does.
    """
    forced = os.environ.get(DEVICE_ENV, "").strip()
    if forced:
        return torch.device(forced)
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local_rank = os.environ.get("LOCAL_RANK")
    return torch.device("cuda", int(local_rank) if local_rank is not None else torch.cuda.current_device())


def place(module: torch.nn.Module) -> torch.nn.Module:
    """``module`` moved to :func:`default_device` (in place, returned for chaining); a no-op on CPU runs."""
    return module.to(default_device())


def device_summary() -> str:
    """Human-readable device line for run manifests, e.g. ``cpu (2 threads)`` or ``cuda:0 NVIDIA H200``."""
    device = default_device()
    if device.type == "cuda":
        return f"{device} {torch.cuda.get_device_name(device)}"
    return f"cpu ({torch.get_num_threads()} threads)"
