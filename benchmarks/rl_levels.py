"""LPO vs GRPO vs GSPO side by side: the same SFT'd start, prompts, seeds and number of RL steps; only the
unit of the importance ratio differs (sentence / token / sequence). Prints a JSON table and writes the three
reward curves into one plot.

    python -m benchmarks.rl_levels --help
    python -m benchmarks.rl_levels --steps 8 --plot rl_levels.png
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
from pathlib import Path


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="RL steps per objective")
    parser.add_argument("--plot", default="rl_levels.png", help="where to write the reward-curve plot")
    args = parser.parse_args(argv)

    import pandas as pd
    import torch

    from configs import resolve
    from corpus.tokenizer import load_tokenizer
    from environments import all_environments
    from evals.tasks import eval_tasks, tasks_from_frame
    from lineage import plots
    from lineage.paths import stage_dir
    from model import load_checkpoint
    from training.post_train.common import evaluate
    from training.post_train.phases import rl_phase, sft_phase, sft_rows

    cfg = resolve("tiny_cpu")
    curated, start = stage_dir("curate"), stage_dir("migrate") / "checkpoint"
    torch.manual_seed(cfg.seed)
    envs = all_environments(cfg.environments)
    tokenizer = load_tokenizer(curated / "tokenizer")
    model = load_checkpoint(start, base=cfg.model)
    candidates = pd.read_parquet(curated / "candidates.parquet")
    sft_tasks = {t.task_id: t for t in tasks_from_frame(pd.read_parquet(curated / "sft_prompts.parquet"))}
    rows, _ = sft_rows(candidates, pd.read_parquet(curated / "sft.parquet"), envs, sft_tasks, "shortest_correct")
    sft_phase(model, tokenizer, rows, cfg, lambda *a: None)
    sft_state = copy.deepcopy(model.state_dict())
    rl_tasks = tasks_from_frame(pd.read_parquet(curated / "rl_prompts.parquet"))
    evals = eval_tasks(curated, cfg.post_train.eval.prompts_per_family)

    names = {"sentence": "LPO", "token": "GRPO", "sequence": "GSPO"}
    curves, table = {}, {}
    for level, name in names.items():
        model.load_state_dict(sft_state)
        run_cfg = dataclasses.replace(
            cfg,
            post_train=dataclasses.replace(
                cfg.post_train, rl=dataclasses.replace(cfg.post_train.rl, level=level, steps=args.steps)
            ),
        )
        history: list[tuple[int, dict]] = []
        rl_phase(model, tokenizer, envs, rl_tasks, run_cfg, lambda _p, step, m, h=history: h.append((step, dict(m))))
        summary, _ = evaluate(model, tokenizer, envs, evals, run_cfg, checkpoint=name)
        overall = summary[summary["family"] == "all"].iloc[0]
        curves[name] = ([s for s, _ in history], [m["reward"] for _, m in history])
        table[name] = {
            "mean_reward": sum(curves[name][1]) / len(history),
            "last_reward": curves[name][1][-1],
            "mean_clip_fraction": sum(m["clip_fraction"] for _, m in history) / len(history),
            "eval_accuracy": float(overall["accuracy"]),
            "eval_tokens_per_correct": float(overall["mean_tokens_correct"]),
        }
    fig = plots.line_chart(curves, title="RL reward: LPO vs GRPO vs GSPO (same start)", xlabel="step", ylabel="reward")
    fig.savefig(Path(args.plot), dpi=100)
    result = {"steps": args.steps, "results": table, "plot": args.plot}
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
