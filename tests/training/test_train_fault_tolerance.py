"""A run SIGKILLed mid-way and restarted ends with exactly the weights of a run never interrupted.

Both runs are real subprocesses (DeepSpeed ZeRO-2, dropout on, one thread, deterministic algorithms). The
victim sleeps a little after each step so that the kill lands between its first checkpoint and its end;
the kill can also land inside a checkpoint write, which must then be invisible to the resume.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from training_toys import same

from training.checkpoint import latest_checkpoint, load_model_weights, read_manifest

WORKER = Path(__file__).with_name("training_worker.py")
STEPS = 16
ARGS = ["--backend", "deepspeed", "--zero-stage", "2", "--steps", str(STEPS), "--checkpoint-every", "3"]


def start(out: Path, env: dict, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(WORKER), "--out", str(out), *ARGS, *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> None:
    _, stderr = process.communicate(timeout=240)
    assert process.returncode == 0, stderr[-4000:]


def test_sigkilled_run_resumes_to_bitwise_identical_weights(tmp_path, worker_env):
    clean = start(tmp_path / "clean", worker_env)
    victim = start(tmp_path / "victim", worker_env, "--sleep", "0.25")
    checkpoints = tmp_path / "victim" / "deepspeed"
    deadline = time.monotonic() + 240
    while latest_checkpoint(checkpoints) is None:
        assert victim.poll() is None, f"victim ended before its first checkpoint: {victim.communicate()[1][-4000:]}"
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    killed_at = read_manifest(latest_checkpoint(checkpoints))["step"]
    assert 0 < killed_at < STEPS and not (tmp_path / "victim" / "deepspeed.json").exists()

    finish(start(tmp_path / "victim", worker_env))
    finish(clean)

    resumed = json.loads((tmp_path / "victim" / "deepspeed.json").read_text())
    straight = json.loads((tmp_path / "clean" / "deepspeed.json").read_text())
    assert resumed["resumed_from"] == killed_at and straight["resumed_from"] == 0
    # Every step after the resume logs the very same loss as the uninterrupted run ...
    assert {s: v for s, v in straight["losses"].items() if int(s) > killed_at} == resumed["losses"]
    # ... and the final weights and optimizer state are identical, bit for bit.
    final_resumed, final_straight = latest_checkpoint(checkpoints), latest_checkpoint(tmp_path / "clean" / "deepspeed")
    assert final_resumed.name == final_straight.name == f"step-{STEPS:06d}"
    assert same(load_model_weights(final_resumed), load_model_weights(final_straight))
    files_resumed, files_straight = read_manifest(final_resumed)["files"], read_manifest(final_straight)["files"]
    for name in ("model.safetensors", "optimizer-rank0.safetensors", "rng-rank0.safetensors"):
        assert files_resumed[name]["sha256"] == files_straight[name]["sha256"], name
