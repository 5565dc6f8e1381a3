"""Lightning attention on one GPU: correctness of the Triton kernels, then fwd+bwd speed side by side.

Run from the repository root on a CUDA machine (meant to finish well within 5 minutes on one H200):

    python -m benchmarks.gpu_lightning --out gpu_lightning.json

1. Check: chunk and fused-recurrent kernels vs the fp32 naive reference on small shapes (odd lengths,
   with an initial state, fp32 and bf16), outputs, final state and grads of q, k, v, initial_state, by
   relative RMS error ‖ref−out‖/‖ref‖.
2. Time: forward + backward in bf16 at B=4, T=8192, H=16, D=128 for our chunk kernel, fla's
   ``chunk_simple_gla`` (if fla is installed) and the torch reference (``naive_chunk_lightning``).
   Bandwidth is the minimum HBM traffic (forward reads q, k, v and writes o; backward reads q, k, v, do
   and writes dq, dk, dv) divided by the time, against the HBM roofline (H200: 4.8 TB/s).
Results go to stdout and, with --out, to a JSON file that also records what the run ran on. Exit
status: 0 all checks passed, 1 a check exceeded its tolerance, 2 no CUDA GPU visible.

Shape legend: B batch, T sequence length, H heads, D head dim (K = V = D), q/k/v/o [B, T, H, D].
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

import torch
import triton
import triton.testing

from kernels.dispatch import default_device
from kernels.lightning import (
    chunk_lightning_attn,
    fused_recurrent_lightning_attn,
    lightning_log_decay,
    naive_chunk_lightning,
    naive_recurrent_lightning,
)
from kernels.testing import relative_rms_error

# (outputs, grads) tolerances; fp32 tl.dot runs in TF32 on NVIDIA GPUs, bf16 also stores chunk states in bf16.
TOLERANCES = {torch.float32: (5e-3, 2e-2), torch.bfloat16: (1e-2, 3e-2)}
CHECK_SHAPES = [(2, 63, 4, 64), (1, 200, 3, 128)]  # (B, T, H, D)


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu_lightning", description=__doc__, formatter_class=_HelpFormatter
    )
    parser.add_argument("--out", type=Path, help="write the results as JSON to this path")
    parser.add_argument("--batch", type=int, default=4, help="B of the timed run")
    parser.add_argument("--seq-len", type=int, default=8192, help="T of the timed run")
    parser.add_argument("--heads", type=int, default=16, help="H of the timed run")
    parser.add_argument("--head-dim", type=int, default=128, help="D of the timed run")
    parser.add_argument("--chunk-size", type=int, default=64, help="chunk length of our chunk kernel")
    parser.add_argument("--hbm-tbps", type=float, default=4.8, help="HBM roofline in TB/s")
    return parser.parse_args()


def _environment() -> dict:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        sha, dirty = None, None
    try:
        import fla

        fla_version = getattr(fla, "__version__", "unknown")
    except ImportError:
        fla_version = None
    return {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": triton.__version__,
        "fla": fla_version,
        "python": platform.python_version(),
        "git_sha": sha,
        "git_dirty": dirty,
    }


def _fwd_bwd(fn, inputs, g, dtype, device, **kwargs):
    """One forward with the final state and one backward through o and the state; returns (o, ht, grads)."""
    leaves = [x.detach().clone().requires_grad_() for x in inputs]
    q, k, v, h0 = leaves
    o, ht = fn(q.to(dtype), k.to(dtype), v.to(dtype), g, initial_state=h0, output_final_state=True, **kwargs)
    gen = torch.Generator(device=device).manual_seed(1)
    do = torch.randn(o.shape, generator=gen, device=device)
    dht = torch.randn(ht.shape, generator=gen, device=device)
    ((o.float() * do).sum() + (ht * dht).sum()).backward()
    return o, ht, [x.grad for x in leaves]


def check_correctness(device: str) -> list[dict]:
    rows = []
    for B, T, H, D in CHECK_SHAPES:
        g = lightning_log_decay(H, 1, 8).to(device)  # [H]
        gen = torch.Generator(device=device).manual_seed(0)
        inputs = [torch.randn(B, T, H, D, generator=gen, device=device) for _ in range(3)]
        inputs.append(torch.randn(B, H, D, D, generator=gen, device=device))
        for dtype, (out_tol, grad_tol) in TOLERANCES.items():
            # The reference sees the same rounded inputs, so only the kernels' own error is measured.
            rounded = [x.to(dtype).float() for x in inputs[:3]] + inputs[3:]
            o_ref, ht_ref, grads_ref = _fwd_bwd(naive_recurrent_lightning, rounded, g, torch.float32, device)
            for name, fn, kwargs in (
                ("chunk", chunk_lightning_attn, {"chunk_size": 64}),
                ("fused_recurrent", fused_recurrent_lightning_attn, {}),
            ):
                o, ht, grads = _fwd_bwd(fn, inputs, g, dtype, device, **kwargs)
                errors = {"o": relative_rms_error(o_ref, o), "final_state": relative_rms_error(ht_ref, ht)}
                for grad_name, ref, out in zip(("dq", "dk", "dv", "dh0"), grads_ref, grads, strict=True):
                    errors[grad_name] = relative_rms_error(ref, out)
                passed = errors["o"] <= out_tol and errors["final_state"] <= out_tol
                passed = passed and all(errors[n] <= grad_tol for n in ("dq", "dk", "dv", "dh0"))
                rows.append(
                    {
                        "kernel": name,
                        "dtype": str(dtype),
                        "shape_BTHD": [B, T, H, D],
                        "errors": errors,
                        "tolerances": {"outputs": out_tol, "grads": grad_tol},
                        "passed": passed,
                    }
                )
                worst = max(errors, key=errors.get)
                print(
                    f"check {name:16s} {dtype!s:15s} B={B} T={T:3d} H={H} D={D:3d}  "
                    f"o {errors['o']:.1e}  worst {worst} {errors[worst]:.1e}  {'ok' if passed else 'FAIL'}"
                )
    return rows


def _fla_chunk_simple_gla():
    try:
        from fla.ops.simple_gla import chunk_simple_gla
    except ImportError:
        return None, "fla not installed"

    def run(q, k, v, g, scale):
        o, _ = chunk_simple_gla(q, k, v, g_gamma=g, scale=scale)
        return o

    return run, None


def time_fwd_bwd(args: argparse.Namespace, device: str) -> list[dict]:
    B, T, H, D = args.batch, args.seq_len, args.heads, args.head_dim
    gen = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(B, T, H, D, generator=gen, device=device, dtype=torch.bfloat16) for _ in range(3))
    for x in (q, k, v):
        x.requires_grad_()
    do = torch.randn(B, T, H, D, generator=gen, device=device, dtype=torch.bfloat16)
    g = lightning_log_decay(H, 1, 8).to(device)
    scale = D**-0.5
    # Minimum HBM traffic of separate fwd and bwd passes, states not counted: forward reads q, k, v and
    # writes o; backward reads q, k, v, do and writes dq, dk, dv; all bf16.
    min_bytes = 11 * B * T * H * D * 2
    roofline_ms = min_bytes / (args.hbm_tbps * 1e12) * 1e3

    def ours():
        return chunk_lightning_attn(q, k, v, g, scale=scale, chunk_size=args.chunk_size)[0]

    def reference():
        return naive_chunk_lightning(q, k, v, g, scale=scale, chunk_size=64)[0]

    fla_run, fla_missing = _fla_chunk_simple_gla()
    candidates = {
        "ours: chunk_lightning_attn": ours,
        "fla: chunk_simple_gla": (lambda: fla_run(q, k, v, g, scale)) if fla_run else None,
        "torch: naive_chunk_lightning": reference,
    }
    rows = []
    for name, forward in candidates.items():
        if forward is None:
            rows.append({"impl": name, "error": fla_missing})
            continue
        try:
            ms = triton.testing.do_bench(lambda f=forward: f().backward(do), warmup=25, rep=100, grad_to_none=[q, k, v])
        except Exception as err:  # an optional third-party kernel may not accept our arguments
            rows.append({"impl": name, "error": f"{type(err).__name__}: {err}"})
            continue
        gbps = min_bytes / (ms * 1e-3) / 1e9
        rows.append({"impl": name, "ms": ms, "GBps": gbps, "roofline_fraction": gbps / (args.hbm_tbps * 1e3)})
        torch.cuda.empty_cache()

    ours_ms = rows[0].get("ms")
    print(
        f"\nfwd+bwd bf16 B={B} T={T} H={H} D={D}; roofline {args.hbm_tbps} TB/s = {roofline_ms:.3f} ms "
        f"for {min_bytes / 1e9:.2f} GB"
    )
    print(f"{'implementation':32s} {'ms':>9s} {'GB/s':>9s} {'roofline':>9s} {'vs ours':>8s}")
    for row in rows:
        if "error" in row:
            print(f"{row['impl']:32s} {row['error']}")
            continue
        row["time_vs_ours"] = row["ms"] / ours_ms if ours_ms else None
        ratio = f"{row['time_vs_ours']:.2f}x" if ours_ms else "-"
        print(f"{row['impl']:32s} {row['ms']:9.3f} {row['GBps']:9.0f} {row['roofline_fraction']:9.1%} {ratio:>8s}")
    return rows


def main() -> int:
    args = _parse_args()
    # The project's one device decision says whether there is a GPU to measure.
    if default_device().type != "cuda":
        print(
            "benchmarks/gpu_lightning.py needs a CUDA GPU; none is visible (kernels.dispatch.default_device() is "
            "the CPU). The CPU tests in tests/kernels cover the kernels through the Triton interpreter.",
            file=sys.stderr,
        )
        return 2
    environment = _environment()
    print(
        f"{environment['device']}  torch {environment['torch']}  triton {environment['triton']}  "
        f"fla {environment['fla'] or 'not installed'}"
    )
    checks = check_correctness("cuda")
    timings = time_fwd_bwd(args, "cuda")
    results = {
        "environment": environment,
        "args": {k: str(v) for k, v in vars(args).items()},
        "checks": checks,
        "timings": timings,
    }
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.out}")
    return 0 if all(row["passed"] for row in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
