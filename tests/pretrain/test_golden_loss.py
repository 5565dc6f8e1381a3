"""The golden loss trajectory of a short tiny pre-training run (``golden_run.py``: DeepSpeed ZeRO-0 fp32,
``training.loop.train``, ``training.lm.lm_loss_fn``, expert-bias updates, one thread, fixed seeds).

Any change to the model, its initialisation, the loss, the optimizer, the schedule, the data order or the
expert-bias update moves these numbers; a change that should move them is committed with a regenerated
golden file, deliberately:

    LING26_REGENERATE_GOLDEN=1 PYTHONPATH=$PWD .venv/bin/python -m pytest tests/pretrain/test_golden_loss.py
    # or: PYTHONPATH=$PWD .venv/bin/python tests/pretrain/golden_run.py --write

How exact. On the CPU that recorded the golden (same torch build, kernel ISA, CPU model and flags: the
file's ``recorded_on``) the comparison is **bitwise** (the golden run is a fresh process); the test process agrees bitwise too
(``test_the_run_repeats_bit_for_bit_in_this_process``). On any other CPU it is a relative tolerance of
``PORTABLE_RTOL``: bitwise does not port. Measured on the recording AMD EPYC (torch 2.13): forcing ATen's
AVX2 kernels (``ATEN_CPU_CAPABILITY=avx2``), MKL's AVX2 or SSE4.2 path (``MKL_ENABLE_INSTRUCTIONS``) or MKL's
conditional-reproducibility mode (``MKL_CBWR=COMPATIBLE``) each changes some step's loss by up to 4 fp32 ulps
(relative ~3e-7) — exactly what an Intel CPU's or an older EPYC's different code paths do (model/weights_io.py
records the same kind of MKL difference). 1e-5 is ~30x that and still below what the smallest real changes
do (measured, max relative step difference): dropping the router z-loss (coefficient 3.5e-6) 5e-5, skipping
the expert-bias update 2.3e-4, halving the MTP loss weight 5e-2.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from golden_run import GOLDEN, cpu_fingerprint, float_hex, run, same_bits, write_golden

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PORTABLE_RTOL = 1e-5
REGENERATE = os.environ.get("LING26_REGENERATE_GOLDEN") == "1"
HOW_TO_REGENERATE = (
    "If the change is meant to move pre-training numbers, regenerate deliberately with "
    "`LING26_REGENERATE_GOLDEN=1 PYTHONPATH=$PWD .venv/bin/python -m pytest tests/pretrain/test_golden_loss.py` "
    "(or `python tests/pretrain/golden_run.py --write`) and say why in the commit; otherwise it is a regression."
)


def fresh_process(tmp_path: Path, **env: str) -> list[float]:
    """The run in a new interpreter (no state from other tests); its losses, bit-exact via float.hex."""
    proc = subprocess.run(
        [sys.executable, str(HERE / "golden_run.py")],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE)]),
            "LING26_PROGRESS": "0",
            "OMP_NUM_THREADS": "1",
            "TORCH_EXTENSIONS_DIR": os.environ.get("TORCH_EXTENSIONS_DIR", str(REPO / ".ling26" / "torch_extensions")),
            **env,
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return [float.fromhex(h) for h in json.loads(proc.stdout.strip().splitlines()[-1])["losses_hex"]]


@pytest.fixture(scope="module")
def trajectory(tmp_path_factory) -> list[float]:
    """The run in a fresh interpreter, so the golden comparison does not depend on which tests ran before."""
    return fresh_process(tmp_path_factory.mktemp("golden-run"))


def test_tiny_pretraining_reproduces_the_golden_loss_trajectory(trajectory):
    if REGENERATE:
        write_golden(trajectory)
        pytest.skip(f"LING26_REGENERATE_GOLDEN=1: wrote {GOLDEN}; review `git diff` and commit it with the reason")
    assert GOLDEN.exists(), f"{GOLDEN} is missing. {HOW_TO_REGENERATE}"
    golden = json.loads(GOLDEN.read_text())
    expected = [float.fromhex(h) for h in golden["losses_hex"]]
    assert len(trajectory) == len(expected), f"{len(trajectory)} steps logged, golden has {len(expected)}"
    report = "\n".join(
        f"  step {i + 1}: got {g!r} ({g.hex()}), golden {e!r} ({e.hex()}), rel diff {abs(g - e) / abs(e):.2e}"
        for i, (g, e) in enumerate(zip(trajectory, expected, strict=True))
    )
    if golden["recorded_on"] == cpu_fingerprint():
        assert all(same_bits(g, e) for g, e in zip(trajectory, expected, strict=True)), (
            f"loss trajectory differs bitwise from {GOLDEN.name}, on the CPU that recorded it "
            f"({golden['recorded_on']}):\n{report}\n{HOW_TO_REGENERATE}"
        )
    else:
        assert trajectory == pytest.approx(expected, rel=PORTABLE_RTOL, abs=0), (
            f"loss trajectory differs from {GOLDEN.name} beyond rel {PORTABLE_RTOL} (this CPU {cpu_fingerprint()} "
            f"is not the recording one {golden['recorded_on']}, so bits are not compared):\n{report}\n"
            f"{HOW_TO_REGENERATE}"
        )


def test_the_run_repeats_bit_for_bit_in_this_process(trajectory, tmp_path):
    """Same machine, the test process itself (whatever other tests imported, seeded or set before): the same
    bits as the fresh interpreter, so nothing in the run depends on process state (allocator addresses,
    hash seeds, global RNG, DeepSpeed already initialised) beyond the one thread it sets."""
    assert float_hex(run(tmp_path)) == float_hex(trajectory)


def test_other_kernel_paths_stay_within_the_portable_tolerance(trajectory, tmp_path):
    """What another CPU would run: ATen's AVX2 kernels and MKL's AVX2 path instead of this CPU's own. The
    trajectory stays within ``PORTABLE_RTOL`` — the margin the golden comparison grants other CPUs."""
    other = fresh_process(tmp_path, ATEN_CPU_CAPABILITY="avx2", MKL_ENABLE_INSTRUCTIONS="AVX2")
    assert other == pytest.approx(trajectory, rel=PORTABLE_RTOL, abs=0)
