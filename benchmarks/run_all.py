"""``make bench``: every CPU benchmark in turn, each printing its JSON; copy results into BENCHMARKS.md.

The GPU benchmark (``benchmarks/gpu_lightning.py``) needs CUDA and is run separately on a GPU machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks import async_rl, decay_rule, generation, long_context, moe_block, rl_corrections
from lineage.paths import stage_dir


def main() -> int:
    print("== MoE block: ours vs transformers deepseek_v3 (train step) ==", flush=True)
    moe_block.main([])
    print("== generation: native vs vLLM ==", flush=True)
    checkpoint = stage_dir("pretrain") / "checkpoint"
    generation.main(["--checkpoint", str(checkpoint)] if (Path(checkpoint) / "config.json").exists() else [])
    print("== long context: hybrid vs GQA base decode (both mixes, batch 1 and 8), cache bytes, prefill ==", flush=True)
    long_context.main([])
    migrated = stage_dir("migrate") / "checkpoint"
    if (Path(migrated) / "config.json").exists():
        print("== Lightning decay rule: official vs vLLM ==", flush=True)
        decay_rule.main(["--checkpoint", str(migrated), "--curated", str(stage_dir("curate"))])
    print("== asynchronous vs synchronous RL (toy stack, lognormal environment latency) ==", flush=True)
    async_rl.main([])
    print("== mismatch corrections: KPop vs IcePop vs TIS vs none (tiny world, bf16 rollouts) ==", flush=True)
    rl_corrections.main([])
    return 0


if __name__ == "__main__":
    sys.exit(main())
