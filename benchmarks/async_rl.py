"""Asynchronous vs synchronous RL wall time (issue 12's benchmark; METHODS §7) on the toy stack.

The same scheduler (``training.rl.scheduler.AsyncRLScheduler``) runs the same number of updates on the same
number of prompt groups at staleness bounds η ∈ {0, 1, 2}; η = 0 is synchronous RL (the next batch is admitted
only after the update). Every environment call (tool observation, verification) sleeps a latency drawn from a
heavy-tailed lognormal, seconds = median · exp(σ · N(0, 1)), seeded per run (``EnvironmentPool``'s rng), so
the environment dominates the step as sandboxes and tool servers do in agentic RL; a compute-only run (η = 0,
no latency) shows how small the model's own share is.

The final reward of every run is measured the same way, outside training: the trained policy samples
``--eval-samples`` rollouts of each toy task with fixed seeds and no latency, scored by ``toy_reward``.
Several seeds per η give the noise to compare the rewards against.

    python -m benchmarks.async_rl --help
    python -m benchmarks.async_rl --steps 20 --seeds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any


def final_reward(policy, *, samples: int, seed: int, max_new_tokens: int, max_turns: int) -> float:
    """Mean toy reward of ``samples`` sampled rollouts per toy task from ``policy`` (no latency, fixed seeds)."""
    from inference.rollout import rollout
    from inference.sampling import SamplingParams
    from training.rl.toy import ToyEngine, ToyEnvironment, toy_reward, toy_tasks

    tasks = [t for t in toy_tasks() for _ in range(samples)]
    params = SamplingParams(temperature=1.0, max_new_tokens=max_new_tokens, seed=seed)
    rows = rollout(ToyEngine(policy), {"toy": ToyEnvironment()}, tasks, params, max_turns=max_turns)
    # ``toy_reward`` reads prompt_ids / response_ids / response_mask / tool_calls, which a Rollout has too.
    rewards = toy_reward(rows, [None] * len(rows))
    return sum(rewards) / len(rewards)


def run_once(
    *,
    eta: int,
    seed: int,
    steps: int,
    batch_groups: int,
    samples_per_prompt: int,
    max_new_tokens: int,
    chunk_tokens: int,
    max_turns: int,
    rollout_workers: int,
    median_s: float,
    sigma: float,
    eval_samples: int,
) -> dict[str, Any]:
    """One training run on the toy stack: wall time of ``scheduler.run`` alone, tokens, staleness, reward."""
    from training.rl.environment import lognormal_latency, no_latency
    from training.rl.scheduler import SchedulerConfig
    from training.rl.toy import toy_scheduler

    cfg = SchedulerConfig(
        max_staleness=eta,
        batch_groups=batch_groups,
        samples_per_prompt=samples_per_prompt,
        max_new_tokens=max_new_tokens,
        chunk_tokens=chunk_tokens,
        max_turns=max_turns,
        rollout_workers=rollout_workers,
        # The staleness bound, not this cap, must limit admission: (η + 1) batches fit at every η measured.
        max_concurrent_groups=max(64, (eta + 1) * batch_groups),
        seed=seed,
    )
    latency = lognormal_latency(median_s, sigma) if median_s > 0 else no_latency
    # One environment thread per row that can be in flight: a thread pool smaller than that would queue
    # sleeping calls and serialise the very latency the asynchronous run is meant to overlap.
    env_workers = max(64, (eta + 1) * batch_groups * samples_per_prompt)
    scheduler = toy_scheduler(cfg, latency=latency, env_workers=env_workers)
    start = time.perf_counter()
    try:
        history = scheduler.run(steps)
    finally:
        scheduler.envs.shutdown()
    wall = time.perf_counter() - start
    tokens = sum(h["model_tokens"] for h in history)
    tail = history[-max(1, steps // 4) :]
    return {
        "eta": eta,
        "seed": seed,
        "wall_s": wall,
        "updates": len(history),
        "groups": int(sum(h["groups"] for h in history)),
        "model_tokens": int(tokens),
        "tokens_per_s": tokens / wall,
        "max_staleness": int(max(h["max_staleness"] for h in history)),
        "mean_token_staleness": statistics.fmean(h["token_staleness_mean"] for h in history),
        "partial_rows": int(sum(h["partial_rows"] for h in history)),
        "train_reward_last_quarter": statistics.fmean(h["reward_mean"] for h in tail),
        "final_reward": final_reward(
            scheduler.trainer.model,
            samples=eval_samples,
            seed=10_000,
            max_new_tokens=max_new_tokens,
            max_turns=max_turns,
        ),
    }


def summarise(runs: list[dict[str, Any]], etas: list[int]) -> dict[str, Any]:
    """Per η: mean wall time and reward over seeds, speed-ups of the means against η = 0 (every η ran the same seeds)."""
    by_eta = {eta: [r for r in runs if r["eta"] == eta and r["kind"] == "latency"] for eta in etas}
    base = by_eta.get(0)
    table = {}
    for eta, part in by_eta.items():
        rewards = [r["final_reward"] for r in part]
        row = {
            "runs": len(part),
            "wall_s_mean": statistics.fmean(r["wall_s"] for r in part),
            "model_tokens_mean": statistics.fmean(r["model_tokens"] for r in part),
            "tokens_per_s_mean": statistics.fmean(r["tokens_per_s"] for r in part),
            "max_staleness": max(r["max_staleness"] for r in part),
            "mean_token_staleness": statistics.fmean(r["mean_token_staleness"] for r in part),
            "final_reward_mean": statistics.fmean(rewards),
            "final_reward_std": statistics.stdev(rewards) if len(rewards) > 1 else 0.0,
        }
        if base:
            base_wall = statistics.fmean(r["wall_s"] for r in base)
            base_tps = statistics.fmean(r["tokens_per_s"] for r in base)
            row["speedup_wall"] = base_wall / row["wall_s_mean"]
            # Rollouts differ between runs, so trained tokens differ a little: the throughput ratio is the
            # speed-up per trained token.
            row["speedup_tokens_per_s"] = row["tokens_per_s_mean"] / base_tps
        table[str(eta)] = row
    return table


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--etas", type=int, nargs="+", default=[0, 1, 2], help="staleness bounds (0 = synchronous)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per η (model init, sampling and latencies)")
    parser.add_argument("--steps", type=int, default=20, help="updates per run")
    parser.add_argument("--batch-groups", type=int, default=4, help="prompt groups per update")
    parser.add_argument("--samples", type=int, default=4, help="responses per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--chunk-tokens", type=int, default=8, help="tokens per engine call (partial rollouts)")
    parser.add_argument("--max-turns", type=int, default=2, help="tool calls per row at most")
    parser.add_argument("--rollout-workers", type=int, default=2)
    parser.add_argument("--median-ms", type=float, default=50.0, help="lognormal latency median per env call")
    parser.add_argument("--sigma", type=float, default=1.5, help="lognormal latency σ (tail weight)")
    parser.add_argument("--eval-samples", type=int, default=32, help="rollouts per toy task for the final reward")
    parser.add_argument("--no-compute-baseline", action="store_true", help="skip the η = 0 no-latency run")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the toy is far too small for more)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    common = {
        "steps": args.steps,
        "batch_groups": args.batch_groups,
        "samples_per_prompt": args.samples,
        "max_new_tokens": args.max_new_tokens,
        "chunk_tokens": args.chunk_tokens,
        "max_turns": args.max_turns,
        "rollout_workers": args.rollout_workers,
        "eval_samples": args.eval_samples,
    }
    runs = []
    # Seed-major, η-minor: the η runs of one seed follow each other, so drift in the shared machine's speed
    # hits every η alike.
    for seed in range(args.seeds):
        for eta in args.etas:
            run = run_once(eta=eta, seed=seed, median_s=args.median_ms / 1000, sigma=args.sigma, **common)
            runs.append({"kind": "latency", **run})
            print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in runs[-1].items()}), flush=True)
    if not args.no_compute_baseline:
        run = run_once(eta=0, seed=0, median_s=0.0, sigma=0.0, **common)
        runs.append({"kind": "compute_only", **run})
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in runs[-1].items()}), flush=True)
    compute = [r for r in runs if r["kind"] == "compute_only"]
    result = {
        "latency": {"distribution": "lognormal", "median_s": args.median_ms / 1000, "sigma": args.sigma},
        "setup": {**common, "seeds": args.seeds, "etas": args.etas},
        "by_eta": summarise(runs, args.etas),
        "compute_only_wall_s": compute[0]["wall_s"] if compute else None,
        "runs": runs,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "runs"}, indent=2))
    return result


if __name__ == "__main__":
    main()
