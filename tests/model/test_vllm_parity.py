"""vLLM serves our exported checkpoint with the same per-token logprobs (ARCHITECTURE.md §4 acceptance)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.vllm
def test_vllm_logprobs_match_ours(tmp_path):
    pytest.importorskip("vllm")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("vllm_parity_run.py")), str(tmp_path / "ckpt")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["compared"] > 100
    assert report["max_abs_diff"] < 1e-4, report
