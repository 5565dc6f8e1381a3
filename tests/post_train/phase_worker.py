"""One post-training phase on the tiny phase world with checkpoints under ``--out/checkpoints``, for the
SIGKILL resume tests; resumes from the newest checkpoint there if there is one. Writes ``result.json`` (what
the phase returned and logged, whether it resumed, the final weights' digest) when it finishes.

    python tests/post_train/phase_worker.py --phase rl --out DIR [--sleep 0.4]
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from phase_world import build_world, pipeline_config, run_phase, weights_digest

from training.checkpoint import latest_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", choices=("sft", "rl", "preference"), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds after each log call (a window to kill in)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    checkpoints = args.out / "checkpoints"
    resumed = latest_checkpoint(checkpoints) is not None
    logs = []

    def on_log(phase, step, metrics):
        logs.append([phase, step, dict(metrics)])
        time.sleep(args.sleep)

    model, result = run_phase(build_world(pipeline_config()), args.phase, checkpoints, on_log)
    out = {"resumed": resumed, "logs": logs, "result": result, "weights": weights_digest(model)}
    (args.out / "result.json").write_text(json.dumps(out))


if __name__ == "__main__":
    main()
