"""Each post-training phase runs through the one training loop, so it checkpoints and resumes like
pre-training: SIGKILLed after a checkpoint and rerun, it ends where an uninterrupted run ends, weights bit
for bit, metrics, logs and contract counts equal (CPU, one process). RL and preference sampling are seeded per
step, and their prompt draws, focal weights and pair tables come back from the checkpoint."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from training.checkpoint import latest_checkpoint, read_manifest

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("phase_worker.py")


def start(out: Path, phase: str, sleep: float = 0.0) -> subprocess.Popen:
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "LING26_PROGRESS": "0"}
    args = [sys.executable, str(WORKER), "--phase", phase, "--out", str(out), "--sleep", str(sleep)]
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen) -> None:
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-4000:]


def step_of(checkpoint: Path) -> int:
    return read_manifest(checkpoint)["step"]


@pytest.mark.parametrize("phase", ["sft", "rl", "preference"])
def test_a_sigkilled_phase_resumes_to_the_uninterrupted_result(tmp_path, phase):
    clean, victim = start(tmp_path / "clean", phase), start(tmp_path / "victim", phase, sleep=0.4)
    checkpoints = tmp_path / "victim" / "checkpoints"
    deadline = time.monotonic() + 240
    while latest_checkpoint(checkpoints) is None:
        assert victim.poll() is None, victim.communicate()[1][-4000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    time.sleep(random.Random(phase).uniform(0.0, 0.3))  # between updates, mid-update or mid-checkpoint
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    killed_at = step_of(latest_checkpoint(checkpoints))

    finish(start(tmp_path / "victim", phase))
    finish(clean)
    resumed = json.loads((tmp_path / "victim" / "result.json").read_text())
    straight = json.loads((tmp_path / "clean" / "result.json").read_text())
    final = step_of(latest_checkpoint(tmp_path / "clean" / "checkpoints"))
    assert 0 < killed_at < final, "the kill must land between the first checkpoint and the last"
    assert resumed["resumed"] and not straight["resumed"]
    assert step_of(latest_checkpoint(checkpoints)) == final
    assert resumed["weights"] == straight["weights"]
    assert resumed["result"] == straight["result"]
    # The resumed run logs what the uninterrupted one logged after the checkpoint, value for value.
    logs = resumed["logs"]
    assert 0 < len(logs) < len(straight["logs"]) and logs == straight["logs"][-len(logs) :]
    if phase == "preference":
        # The source ran out before the loop's bound: a step without pairs took no update.
        assert final < 6 and any("loss" not in m for _, _, m in straight["logs"])
