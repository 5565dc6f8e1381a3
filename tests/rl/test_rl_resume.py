"""Lossless resume: a run stopped or SIGKILLed at any moment restarts from its last checkpoint with no prompt
lost and none trained twice; at η = 0 the resumed run is the uninterrupted one, loss for loss and bit for bit."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from training.rl import resume
from training.rl.environment import lognormal_latency
from training.rl.scheduler import AsyncRLScheduler, Interrupted, SchedulerConfig
from training.rl.toy import toy_scheduler

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("rl_worker.py")


def stop_after_engine_calls(scheduler, calls):
    """Stop the run from inside the ``calls``-th engine call: wall-clock timers are no good here, the toy
    run is faster than any delay that would land in the middle of it on every machine."""
    generate, count, lock = scheduler.engine.generate, [0], threading.Lock()

    def counting(prompts, params):
        with lock:
            count[0] += 1
            hit = count[0] == calls
        if hit:
            scheduler.stop()
        return generate(prompts, params)

    scheduler.engine.generate = counting


def test_stopped_at_random_moments_no_prompt_is_lost_or_trained_twice(tmp_path):
    cfg = SchedulerConfig(
        max_staleness=2, batch_groups=2, samples_per_prompt=2, max_new_tokens=16, chunk_tokens=4, step_token_budget=30
    )
    rng, total, interruptions = random.Random(0), 12, 0
    while True:
        scheduler = toy_scheduler(cfg, checkpoint_dir=tmp_path, latency=lognormal_latency(0.003, 1.0))
        if interruptions < 5:
            # A whole run is ~175 engine calls: each attempt is cut somewhere in its first ~40, mid-rollout.
            stop_after_engine_calls(scheduler, rng.randint(5, 40))
        try:
            scheduler.run(total)
            break
        except Interrupted:
            interruptions += 1
        finally:
            scheduler.envs.shutdown()
    saved, _ = resume.load(resume.latest(tmp_path))
    assert interruptions == 5 and len(saved["trained"]) == total
    assert AsyncRLScheduler.ledger_problems(saved) == []
    assert saved["cursor"] > sum(len(step) for step in saved["trained"])  # some prompts were in flight at the end


def test_the_ledger_check_finds_lost_and_repeated_prompts():
    good = {
        "cursor": 5,
        "trained": [[0, 1], [3]],
        "in_flight": [{"prompt_index": 2}],
        "finished": [{"prompt_index": 4}],
    }
    assert AsyncRLScheduler.ledger_problems(good) == []
    lost = {**good, "finished": []}
    twice = {**good, "trained": [[0, 1], [3, 1]]}
    both = {**good, "in_flight": [{"prompt_index": 2}, {"prompt_index": 3}]}
    assert AsyncRLScheduler.ledger_problems(lost) == ["admitted but lost: [4]"]
    assert AsyncRLScheduler.ledger_problems(twice) == ["trained twice: [1]"]
    assert AsyncRLScheduler.ledger_problems(both) == ["trained and still waiting: [3]"]


def start(out, eta, sleep=0.0):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    args = [sys.executable, str(WORKER), "--out", str(out), "--steps", "8", "--eta", str(eta), "--sleep", str(sleep)]
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def finish(process):
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, stderr[-4000:]


@pytest.mark.parametrize("eta", [0, 2])
def test_sigkilled_run_resumes_losslessly(tmp_path, eta):
    clean, victim = start(tmp_path / "clean", eta), start(tmp_path / "victim", eta, sleep=0.3)
    checkpoints = tmp_path / "victim" / "checkpoints"
    deadline = time.monotonic() + 240
    while resume.latest(checkpoints) is None:
        assert victim.poll() is None, victim.communicate()[1][-4000:]
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.02)
    time.sleep(random.Random(eta).uniform(0.0, 0.5))  # anywhere: between steps, mid-update, mid-checkpoint
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    killed_at = resume.load(resume.latest(checkpoints))[0]
    assert 0 < len(killed_at["trained"]) < 8 and AsyncRLScheduler.ledger_problems(killed_at) == []

    finish(start(tmp_path / "victim", eta))
    finish(clean)
    resumed = json.loads((tmp_path / "victim" / "result.json").read_text())
    straight = json.loads((tmp_path / "clean" / "result.json").read_text())
    assert resumed["resumed_from"] == len(killed_at["trained"]) and straight["resumed_from"] is None
    final, _ = resume.load(resume.latest(checkpoints))
    assert len(final["trained"]) == 8 and AsyncRLScheduler.ledger_problems(final) == []
    if eta == 0:
        # Synchronous: the resumed run is the uninterrupted one, step for step and bit for bit.
        assert resumed["losses"] == straight["losses"] and resumed["weights"] == straight["weights"]
        clean_final, _ = resume.load(resume.latest(tmp_path / "clean" / "checkpoints"))
        assert final["trained"] == clean_final["trained"]
