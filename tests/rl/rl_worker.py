"""One asynchronous RL run on the toy stack with checkpoints, for the SIGKILL test; resumes from the last
checkpoint in ``--out`` if there is one. Writes ``result.json`` (per-step losses, where it resumed, the
final weights' checksum) when it finishes.

    python tests/rl/rl_worker.py --out DIR --steps 8 --eta 2 [--sleep 0.2]
"""

import argparse
import json
import time
from pathlib import Path

import torch

from inference.weight_sync import state_checksum
from training.rl.environment import lognormal_latency
from training.rl.scheduler import SchedulerConfig
from training.rl.toy import toy_scheduler


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--eta", type=int, default=2)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds after each update (a window to kill in)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = SchedulerConfig(
        max_staleness=args.eta,
        batch_groups=2,
        samples_per_prompt=2,
        max_new_tokens=16,
        chunk_tokens=4,
        step_token_budget=None if args.eta == 0 else 30,
        seed=3,
    )
    scheduler = toy_scheduler(cfg, checkpoint_dir=args.out / "checkpoints", latency=lognormal_latency(0.002, 1.0))
    train_step = scheduler.trainer.train_step

    def slow_step(groups, *, version):
        stats = train_step(groups, version=version)
        time.sleep(args.sleep)
        return stats

    scheduler.trainer.train_step = slow_step
    try:
        history = scheduler.run(args.steps)
    finally:
        scheduler.envs.shutdown()
    result = {
        "resumed_from": scheduler.resumed_from,
        "losses": {str(int(h["step"])): h["loss"] for h in history},
        "weights": state_checksum(scheduler.trainer.policy_state()),
    }
    (args.out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
