"""KPop vs IcePop vs TIS vs no correction on the tiny world, with a real training-inference gap (issue 12).

The rollout engine runs a bf16 copy of the policy (``kpop_rl.rollout_precision="bf16"``) while the trainer
stays fp32, so the behaviour log-probs the engine records differ from the trainer's for the same tokens.
Each method runs the KPop RL stage's function (``training.rl.run.run_kpop_rl``) from the same start, with the
same seeds, prompts and number of updates; only ``kpop_rl.correction`` differs. Per method it reports the
final reward (mean of the last quarter of the steps), and over the trained tokens sampled by the current
version (the pure engine gap, ``mismatch_report``): the masked fraction of that method, mean |Δ log p|, the
K3 estimate of KL(π_infer ‖ π_train), plus the after-training greedy accuracy over the agentic families.

The world: ``--curated`` / ``--base`` name stage outputs (``curate/`` and a folder holding ``checkpoint/``);
by default a tiny world is built under ``--out`` as the RL tests build theirs (agentic prompts of difficulty
1-2, a tokenizer trained on them, a hybrid of the tiny profile's shape given ``--warm-steps`` of supervised
training on the RL prompts' reference responses so that rewards vary within a group).

    python -m benchmarks.rl_corrections --help
    python -m benchmarks.rl_corrections --steps 12 --out /tmp/ling26-bench-rl-corrections
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

METHODS = ("kpop", "icepop", "tis", "none")
OUT = "/tmp/ling26-bench-rl-corrections"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def warm_start(model, tokenizer, examples, *, steps: int, seed: int, batch_size: int = 16, lr: float = 3e-3) -> float:
    """``steps`` supervised updates on (task, reference response) pairs; the last loss.

    A randomly initialised policy never solves a task, so every reward is 0, every group advantage 0, and
    the four corrections would train nothing and compare nothing. A short SFT on the RL prompts' reference
    responses gives the policy a pass rate strictly between 0 and 1 on some prompts: a learning signal."""
    import torch

    from corpus.tokenizer import EOS, PAD
    from training.objectives import pack_examples, sft_loss

    encode = lambda text: tokenizer.encode(text, add_special_tokens=False).ids  # noqa: E731
    ids_NT, mask_NT = pack_examples(
        [encode(t.prompt) for t, _ in examples],
        [encode(text) for _, text in examples],
        128,
        tokenizer.token_to_id(PAD),
        tokenizer.token_to_id(EOS),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        pick = torch.randint(0, ids_NT.shape[0], (batch_size,), generator=gen)
        loss, _ = sft_loss(model(ids_NT[pick]).logits, ids_NT[pick], mask_NT[pick])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    return float(loss.detach())


def build_world(
    cfg, curated: Path, base: Path, *, families: tuple[str, ...], seed: int = 0, warm_steps: int = 0
) -> None:
    """A tiny world: eval and RL prompts of ``families`` (difficulties 1-2), a BPE tokenizer trained on them
    and on reference responses, a hybrid of the tiny profile's shape (randomly initialised, then
    ``warm_steps`` of ``warm_start``) in the official layout under ``base/checkpoint``."""
    import dataclasses
    import shutil

    import torch

    from corpus.env_data import prompt_frame
    from corpus.tokenizer import save_tokenizer, train_tokenizer
    from environments import all_environments
    from model import HybridForCausalLM, export_checkpoint

    curated.mkdir(parents=True, exist_ok=True)
    base.mkdir(parents=True, exist_ok=True)
    envs = all_environments(cfg.environments)
    tasks = {
        split: [
            t
            for family in families
            for difficulty in (1, 2)
            for t in envs[family].generate(6, seed=split_seed + difficulty, difficulty=difficulty, allow_fewer=True)
        ]
        for split, split_seed in (("eval", 11), ("rl_prompts", 22))
    }
    for split, split_tasks in tasks.items():
        prompt_frame(split_tasks).to_parquet(curated / f"{split}.parquet", index=False)
    texts = [t.prompt + " " + t.answer for split_tasks in tasks.values() for t in split_tasks]
    for family in families:
        task = next(t for t in tasks["rl_prompts"] if t.family == family)
        texts += [c.text for c in envs[family].reference_responses(task, seed=0, n=2)]
    tokenizer = train_tokenizer(texts * 4, vocab_size=cfg.model.vocab_size)
    save_tokenizer(tokenizer, curated / "tokenizer")
    torch.manual_seed(seed)
    # A wider init than the default, as the RL tests use: the random policy's token distribution is far
    # from uniform, so bf16 rounding moves confident and rare tokens alike (both sides of KPop's band).
    model = HybridForCausalLM(dataclasses.replace(cfg.model, initializer_range=0.08))
    if warm_steps:
        references = [
            (t, c.text) for t in tasks["rl_prompts"] for c in envs[t.family].reference_responses(t, seed=0, n=2)
        ]
        warm_start(model, tokenizer, references, steps=warm_steps, seed=seed)
    export_checkpoint(model.eval(), base / "checkpoint")
    for name in TOKENIZER_FILES:
        shutil.copy(curated / "tokenizer" / name, base / "checkpoint" / name)


def method_config(method: str, *, steps: int, seed: int, small: bool, eta: int = 0):
    """The tiny profile with this correction, bf16 rollouts, and the sizes the benchmark's time budget allows.

    η = 0 and no token budget by default: rows then depend on their seeds and the versions they met only, so
    every method's first step trains on the very same rollouts and any difference after it comes from the
    correction, not from thread timing (with η > 0 which tokens are stale depends on the scheduling)."""
    from configs import resolve

    overrides: dict[str, Any] = {
        "seed": seed,
        "lineage.dvc": False,
        "kpop_rl.correction": method,
        "kpop_rl.rollout_precision": "bf16",
        "kpop_rl.steps": steps,
        "kpop_rl.max_staleness": eta,
        "kpop_rl.step_token_budget": None if eta == 0 else 240,
        # One checkpoint at the end: the resume machinery is not what is measured here.
        "kpop_rl.checkpoint_every": steps,
        "kpop_rl.eval_prompts_per_family": 2 if small else 4,
        "kpop_rl.eval_max_new_tokens": 16 if small else 32,
        "kpop_rl.eval_max_tool_turns": 1,
        "kpop_rl.curriculum_probe_prompts": 2 if small else 4,
        "kpop_rl.curriculum_probe_samples": 2,
        "kpop_rl.prompts_per_family": 2 if small else 4,
    }
    if small:
        overrides.update(
            {
                "kpop_rl.batch_groups": 2,
                "kpop_rl.samples_per_prompt": 2,
                "kpop_rl.max_new_tokens": 12,
                "kpop_rl.chunk_tokens": 6,
                "kpop_rl.step_token_budget": None if eta == 0 else 24,
                "kpop_rl.max_tool_turns": 1,
            }
        )
    return resolve("tiny_cpu", overrides)


def run_method(
    method: str, curated: Path, base: Path, out: Path, *, steps: int, seed: int, small: bool, eta: int = 0
) -> dict:
    """One stage run with ``method``; its per-step curves and headline numbers."""
    import pandas as pd

    from training.rl.run import run_kpop_rl

    cfg = method_config(method, steps=steps, seed=seed, small=small, eta=eta)
    start = time.perf_counter()
    metrics = run_kpop_rl(cfg, curated, base, out)
    wall = time.perf_counter() - start
    steps_frame = pd.read_parquet(out / "steps.parquet")
    summary = json.loads((out / "mismatch_summary.json").read_text())
    fresh = summary["fresh"]
    rewards = steps_frame["reward_mean"].tolist()
    tail = rewards[-max(1, len(rewards) // 4) :]
    by_step = summary["by_step"]
    return {
        "curves": {
            "step": steps_frame["step"].astype(int).tolist(),
            "reward": rewards,
            "mismatch_step": [s["step"] for s in by_step],
            "masked_fraction": [s["masked_fraction"] for s in by_step],
            "logp_abs_diff": [s["logp_abs_diff"] for s in by_step],
            "k3_kl": [s["k3_kl"] for s in by_step],
        },
        "table": {
            "final_reward": statistics.fmean(tail),
            "mean_reward": statistics.fmean(rewards),
            "masked_fraction": fresh.get("masked_fraction", 0.0),
            "logp_abs_diff": fresh.get("logp_abs_diff", 0.0),
            "k3_kl": fresh.get("k3_kl", 0.0),
            "fresh_tokens": summary["fresh_tokens"],
            "tokens": summary["tokens"],
            "eval_after_accuracy": metrics.get("eval.after.all.accuracy", float("nan")),
            "eval_before_accuracy": metrics.get("eval.before.all.accuracy", float("nan")),
            "wall_s": wall,
        },
    }


def plot(results: dict[str, dict], out: Path) -> list[str]:
    """Reward and the three mismatch curves, one line per method, one PNG each; the paths written."""
    from lineage import plots

    panels = {
        "reward": ("step", "reward", "RL reward (mean over the step's rollouts)"),
        "masked_fraction": ("mismatch_step", "masked fraction", "masked fraction of fresh tokens"),
        "logp_abs_diff": ("mismatch_step", "mean |log p_train - log p_infer|", "mean |Δ log p| (bf16 engine vs fp32)"),
        "k3_kl": ("mismatch_step", "K3 KL(π_infer ‖ π_train)", "K3 KL per token"),
    }
    paths = []
    for key, (x_key, ylabel, title) in panels.items():
        series = {m: (r["curves"][x_key], r["curves"][key]) for m, r in results.items()}
        fig = plots.line_chart(series, title=f"{title}: KPop vs IcePop vs TIS vs none", xlabel="step", ylabel=ylabel)
        path = out / f"{key}.png"
        fig.savefig(path, dpi=100)
        paths.append(str(path))
    return paths


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="RL updates per method")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=["kpop", "icepop", "tis", "mis", "none"])
    parser.add_argument("--out", default=OUT, help="folder for the world, the per-method stage outputs and PNGs")
    parser.add_argument("--curated", default=None, help="a curate/ output to use instead of the built tiny world")
    parser.add_argument("--base", default=None, help="a folder holding checkpoint/ (e.g. data/post_train)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--warm-steps", type=int, default=150, help="SFT steps that give the built world's policy a signal"
    )
    parser.add_argument("--eta", type=int, default=0, help="staleness bound (0: deterministic, see method_config)")
    parser.add_argument("--small", action="store_true", help="minimal sizes (for tests): 2 groups × 2 samples")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args(argv)
    if (args.curated is None) != (args.base is None):
        parser.error("--curated and --base go together")

    import shutil

    import torch

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.curated is None:
        curated, base = out / "world" / "curate", out / "world" / "post_train"
        shutil.rmtree(out / "world", ignore_errors=True)
        cfg = method_config("kpop", steps=args.steps, seed=args.seed, small=args.small)
        build_world(cfg, curated, base, families=cfg.kpop_rl.families, seed=args.seed, warm_steps=args.warm_steps)
    else:
        curated, base = Path(args.curated), Path(args.base)
    results = {}
    for method in args.methods:
        method_out = out / method
        # A stale output folder could hold another run's resume state; every method starts afresh.
        shutil.rmtree(method_out, ignore_errors=True)
        results[method] = run_method(
            method, curated, base, method_out, steps=args.steps, seed=args.seed, small=args.small, eta=args.eta
        )
        shown = {k: round(v, 5) if isinstance(v, float) else v for k, v in results[method]["table"].items()}
        print(json.dumps({"method": method, **shown}), flush=True)
    result = {
        "steps": args.steps,
        "seed": args.seed,
        "eta": args.eta,
        "rollout_precision": "bf16",
        "trainer_precision": "fp32",
        "table": {m: r["table"] for m, r in results.items()},
        "curves": {m: r["curves"] for m, r in results.items()},
        "plots": plot(results, out),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "curves"}, indent=2))
    return result


if __name__ == "__main__":
    main()
