"""What serving a Ling-2.5/2.6 checkpoint with vLLM's Lightning decay rule instead of the official one does.

The official modeling file decays layer ℓ (0-based) of L with g_h = -slope_h · (1 - (ℓ-1)/(L-1) + 1e-5); vLLM's
Bailing linear attention uses ℓ where the official code has ℓ-1 (METHODS.md §2.2). Every Lightning layer then
decays a little slower under vLLM, by slope_h / (L-1) in log space. This script loads one checkpoint twice,
switches one copy to the vLLM rule (``model.set_decay_rule``), and measures on the same inputs:

- the per-layer decays under both rules (the fastest and slowest head's half-life in tokens);
- held-out loss under each rule and the mean KL(official || vLLM) of next-token distributions, per window
  length, over the same held-out tokens for every length (a longer window lets the decay difference
  accumulate over more positions);
- greedy evaluation under each rule (accuracy per family) and how many responses come out identical.

    python -m benchmarks.decay_rule --help
    python -m benchmarks.decay_rule --checkpoint data/migrate/checkpoint --curated data/curate
"""

from __future__ import annotations

import argparse
import copy
import json
import math
from pathlib import Path


def decay_table(model) -> list[dict]:
    """Per Lightning layer: the fastest and slowest head's half-life (tokens) under both rules."""
    from model import model_log_decays

    official, vllm = model_log_decays(model.config, "official"), model_log_decays(model.config, "vllm")
    rows = []
    for layer, g_official in official.items():
        g_vllm = vllm[layer]
        rows.append(
            {
                "layer": layer,
                "half_life_fastest_official": math.log(0.5) / float(g_official.min()),
                "half_life_fastest_vllm": math.log(0.5) / float(g_vllm.min()),
                "half_life_slowest_official": math.log(0.5) / float(g_official.max()),
                "half_life_slowest_vllm": math.log(0.5) / float(g_vllm.max()),
            }
        )
    return rows


def language_modelling(official, vllm, heldout_tokens, seq_lens: list[int], tokens: int) -> list[dict]:
    from model.migration import heldout_loss, logits_kl
    from training.migrate.phases import heldout_windows

    rows = []
    for seq_len in seq_lens:
        batches = heldout_windows(heldout_tokens, seq_len, tokens // seq_len, batch_size=8)
        rows.append(
            {
                "seq_len": seq_len,
                "windows": sum(len(b) for b in batches),
                "loss_official": heldout_loss(official, batches),
                "loss_vllm": heldout_loss(vllm, batches),
                "kl_official_vllm": logits_kl(official, vllm, batches),
            }
        )
    return rows


def greedy_eval(official, vllm, cfg, curated: Path, per_family: int) -> dict:
    from corpus.tokenizer import EOS, PAD, load_tokenizer
    from environments import all_environments
    from evals.harness import evaluate_policy
    from evals.tasks import eval_tasks
    from inference.native import NativeEngine
    from inference.sampling import SamplingParams

    tokenizer = load_tokenizer(curated / "tokenizer")
    envs = all_environments(cfg.environments)
    tasks = eval_tasks(curated, per_family)
    params = SamplingParams(temperature=0.0, max_new_tokens=cfg.pretrain.eval.max_new_tokens)
    results = {}
    for rule, model in (("official", official), ("vllm", vllm)):
        engine = NativeEngine(model, tokenizer, eos_id=tokenizer.token_to_id(EOS), pad_id=tokenizer.token_to_id(PAD))
        summary, rollouts = evaluate_policy(
            engine, envs, tasks, checkpoint=rule, params=params, max_turns=cfg.pretrain.eval.max_tool_turns
        )
        results[rule] = (summary.set_index("family")["accuracy"].to_dict(), rollouts["response"].tolist())
    same = sum(a == b for a, b in zip(results["official"][1], results["vllm"][1], strict=True))
    return {
        "prompts": len(tasks),
        "identical_responses": same,
        "accuracy_official": results["official"][0],
        "accuracy_vllm": results["vllm"][0],
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default="data/migrate/checkpoint", help="an exported hybrid folder")
    parser.add_argument("--curated", default="data/curate", help="the curate stage's outputs (shards, eval set)")
    parser.add_argument("--seq-lens", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--tokens", type=int, default=32768, help="held-out tokens scored at every window length")
    parser.add_argument("--per-family", type=int, default=18, help="greedy eval prompts per family (0: skip)")
    parser.add_argument("--json", default="", help="also write the results to this file")
    args = parser.parse_args(argv)

    import torch

    from configs import PipelineConfig, from_dict
    from corpus.shards import read_shards
    from model import load_checkpoint, set_decay_rule

    curated = Path(args.curated)
    cfg = from_dict(PipelineConfig, json.loads((curated / "config.json").read_text()))
    official = load_checkpoint(args.checkpoint).eval()
    vllm = copy.deepcopy(official)
    set_decay_rule(vllm, "vllm")
    torch.manual_seed(0)
    report = {
        "checkpoint": args.checkpoint,
        "decays": decay_table(official),
        "heldout": language_modelling(
            official, vllm, read_shards(curated / "shards", "heldout"), args.seq_lens, args.tokens
        ),
    }
    if args.per_family:
        report["greedy_eval"] = greedy_eval(official, vllm, cfg, curated, args.per_family)
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return report


def format_report(report: dict) -> str:
    lines = ["half-life in tokens (fastest head / slowest head), official vs vLLM rule", "| layer | official | vLLM |"]
    lines.append("| --- | --- | --- |")
    for r in report["decays"]:
        lines.append(
            f"| {r['layer']} | {r['half_life_fastest_official']:.2f} / {r['half_life_slowest_official']:.1f} | "
            f"{r['half_life_fastest_vllm']:.2f} / {r['half_life_slowest_vllm']:.1f} |"
        )
    lines += [
        "",
        "| window | held-out loss official | held-out loss vLLM | KL(official ‖ vLLM) |",
        "| --- | --- | --- | --- |",
    ]
    for r in report["heldout"]:
        lines.append(
            f"| {r['seq_len']} ({r['windows']} windows) | {r['loss_official']:.4f} | {r['loss_vllm']:.4f} | "
            f"{r['kl_official_vllm']:.5f} |"
        )
    if "greedy_eval" in report:
        g = report["greedy_eval"]
        lines += ["", f"greedy eval: {g['identical_responses']}/{g['prompts']} responses identical"]
        lines.append("| family | accuracy official | accuracy vLLM |")
        lines.append("| --- | --- | --- |")
        for family, acc in g["accuracy_official"].items():
            lines.append(f"| {family} | {acc:.3f} | {g['accuracy_vllm'][family]:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
