"""Train-step throughput of our Ling-2.0 MoE block vs transformers' DeepSeek-V3 MoE at the same dims.

Both blocks: sigmoid group-limited top-k routing, routed SwiGLU experts, one shared expert, the same
hidden / expert sizes, token count and dtype. Steps alternate between the two (A B A B ...) so machine
load hits both alike; the ratio is of medians.

    python -m benchmarks.moe_block --help
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch


def build_blocks(args: argparse.Namespace):
    from transformers import DeepseekV3Config
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE

    from configs.model import tiny_model
    from model.moe import SparseMoeBlock

    ours_cfg = tiny_model()
    ours_cfg = type(ours_cfg)(
        **{
            **ours_cfg.__dict__,
            "hidden_size": args.hidden,
            "num_experts": args.experts,
            "num_experts_per_tok": args.top_k,
            "moe_intermediate_size": args.expert_dim,
            "n_group": args.groups,
            "topk_group": args.topk_groups,
        }
    )
    ours = SparseMoeBlock(ours_cfg)
    ref_cfg = DeepseekV3Config(
        hidden_size=args.hidden,
        moe_intermediate_size=args.expert_dim,
        n_routed_experts=args.experts,
        num_experts_per_tok=args.top_k,
        n_group=args.groups,
        topk_group=args.topk_groups,
        n_shared_experts=1,
        routed_scaling_factor=ours_cfg.routed_scaling_factor,
        norm_topk_prob=True,
        hidden_act="silu",
    )
    if args.hf_experts != "eager":
        ref_cfg._experts_implementation = args.hf_experts
    ref = DeepseekV3MoE(ref_cfg)
    for module in (ours, ref):
        for p in module.parameters():
            torch.nn.init.normal_(p, std=0.02)
    return ours, ref


def step_seconds(block, x_BTD: torch.Tensor, ours: bool) -> float:
    x = x_BTD.detach().requires_grad_(True)
    start = time.perf_counter()
    y = block(x, None)[0] if ours else block(x)
    y.float().pow(2).mean().backward()
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--experts", type=int, default=16)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--expert-dim", type=int, default=64)
    parser.add_argument("--groups", type=int, default=4)
    parser.add_argument("--topk-groups", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=4096, help="tokens per step (batch x sequence)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--hf-experts", default="eager", help="transformers experts implementation to compare with")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    ours, ref = build_blocks(args)
    x = torch.randn(1, args.tokens, args.hidden)
    times: dict[str, list[float]] = {"ours": [], "deepseek_v3": []}
    for i in range(args.warmup + args.steps):
        for name, block in (("ours", ours), ("deepseek_v3", ref)):
            t = step_seconds(block, x, ours=name == "ours")
            if i >= args.warmup:
                times[name].append(t)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "dims": {
            k: getattr(args, k) for k in ("hidden", "experts", "top_k", "expert_dim", "groups", "topk_groups", "tokens")
        },
        "threads": torch.get_num_threads(),
        "hf_experts": args.hf_experts,
        "tokens_per_s": {k: args.tokens / v for k, v in med.items()},
        "speedup_ours_vs_deepseek_v3": med["deepseek_v3"] / med["ours"],
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
