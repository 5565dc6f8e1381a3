"""Error measures shared by the kernel tests and the GPU check in ``benchmarks/gpu_lightning.py``."""

from __future__ import annotations

import torch


def relative_rms_error(ref: torch.Tensor, out: torch.Tensor) -> float:
    """‖ref − out‖ / ‖ref‖ in fp64; 0 when both are exactly zero, inf if ``out`` has a NaN or inf."""
    ref, out = ref.detach().double(), out.detach().double()
    if not torch.isfinite(out).all():
        return float("inf")
    diff = (ref - out).norm().item()
    scale = ref.norm().item()
    return diff / scale if scale > 0 else diff


def assert_close(name: str, ref: torch.Tensor, out: torch.Tensor, tol: float) -> None:
    if ref.shape != out.shape:
        raise AssertionError(f"{name}: shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
    err = relative_rms_error(ref, out)
    if not err <= tol:
        raise AssertionError(f"{name}: relative RMS error {err:.3e} > {tol:.1e}")
