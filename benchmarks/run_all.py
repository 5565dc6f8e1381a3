"""``make bench``: every CPU benchmark in turn, each printing its JSON; copy results into BENCHMARKS.md.

The GPU benchmark (``benchmarks/gpu_lightning.py``) needs CUDA and is run separately on a GPU machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

from benchmarks import generation, moe_block
from lineage.paths import stage_dir


def main() -> int:
    print("== MoE block: ours vs transformers deepseek_v3 (train step) ==", flush=True)
    moe_block.main([])
    print("== generation: native vs vLLM ==", flush=True)
    checkpoint = stage_dir("pretrain") / "checkpoint"
    generation.main(["--checkpoint", str(checkpoint)] if (Path(checkpoint) / "config.json").exists() else [])
    return 0


if __name__ == "__main__":
    sys.exit(main())
