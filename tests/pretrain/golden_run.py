"""A short tiny pre-training run whose per-step losses are the golden trajectory
(``tests/pretrain/golden/tiny_pretrain_losses.json``, checked by ``test_golden_loss.py``).

It trains the way ``training.pretrain.run_pretrain`` does: a Ling-2.0 base (dense layer + group-limited
sigmoid MoE + MTP) under the DeepSpeed engine at ZeRO-0 fp32 (the pre-training default), ``training.loop.train``
with ``training.lm.lm_loss_fn`` + the load-balance statistic, and the aux-loss-free expert-bias update after
every step. Only the sizes shrink, and the corpus is a fixed synthetic stream (numpy's PCG64 draws the same
numbers on every machine), so the run needs no curation.

    python tests/pretrain/golden_run.py            # print the trajectory as JSON (a fresh process)
    python tests/pretrain/golden_run.py --write    # regenerate the golden file (deliberately; review the diff)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import struct
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

GOLDEN = Path(__file__).resolve().parent / "golden" / "tiny_pretrain_losses.json"
VOCAB = 64
STEPS = 6
SEED = 7
# Two layers: one dense, one MoE of 8 experts in 2 groups (group-limited top-2 of 1 group), one MTP layer.
SHAPE = {
    "vocab_size": VOCAB,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "num_experts": 8,
    "n_group": 2,
    "topk_group": 1,
    "moe_intermediate_size": 32,
    "max_position_embeddings": 64,
}


def corpus(n: int = 6000) -> np.ndarray:
    """uint16 tokens: mostly ``next = (5 * prev + 3) % VOCAB``, 25% uniform noise — learnable, not trivial."""
    rng = np.random.default_rng(SEED)
    noise = rng.random(n) < 0.25
    random_tokens = rng.integers(0, VOCAB, n)
    out = np.empty(n, dtype=np.uint16)
    out[0] = 1
    for i in range(1, n):
        out[i] = random_tokens[i] if noise[i] else (5 * int(out[i - 1]) + 3) % VOCAB
    return out


def cpu_fingerprint() -> dict[str, str]:
    """What decides the bits of a CPU run: the torch build, the kernel ISA torch dispatches to, and the CPU
    itself (vendor, family/model/stepping, feature flags: MKL picks its code path from these)."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        info["model name"] = platform.processor()
    return {
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu": " / ".join(info.get(k, "?") for k in ("vendor_id", "model name", "cpu family", "model", "stepping")),
        "cpu_flags_sha256": hashlib.sha256(" ".join(sorted(info.get("flags", "").split())).encode()).hexdigest()[:16],
    }


def float_hex(values: list[float]) -> list[str]:
    """Exact bit patterns (fp64 ``float.hex``); the losses are fp32 values widened, so nothing is lost."""
    return [float(v).hex() for v in values]


def same_bits(a: float, b: float) -> bool:
    return struct.pack(">d", a) == struct.pack(">d", b)


def run(checkpoint_dir: Path) -> list[float]:
    """Per-step training loss (mean over the step's micro-batches) of the tiny run, on one intra-op thread
    (the same reduction split on every machine, whatever its core count); the caller's count comes back."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(checkpoint_dir)
    finally:
        torch.set_num_threads(threads)


def _train(checkpoint_dir: Path) -> list[float]:
    from configs.model import tiny_model
    from configs.training import EngineConfig, OptimConfig, TrainLoopConfig
    from model import Ling2ForCausalLM
    from training.builder import build_engine
    from training.data import TokenBatches
    from training.lm import expert_bias_updater, lm_loss_fn, load_balance
    from training.loop import train

    cfg = dataclasses.replace(tiny_model(), **SHAPE)
    loop = TrainLoopConfig(
        max_steps=STEPS,
        micro_batch_size=4,
        grad_accum_steps=2,
        seq_len=32,
        log_every=1,
        checkpoint_every=STEPS,
        keep_checkpoints=1,
        seed=SEED,
    )
    torch.manual_seed(SEED)
    model = Ling2ForCausalLM(cfg)
    engine = build_engine(
        model,
        EngineConfig(),  # the pre-training default: DeepSpeed, ZeRO-0, fp32, torch's AdamW
        OptimConfig(lr=3e-3, warmup_steps=2),
        total_steps=loop.max_steps,
        grad_accum_steps=loop.grad_accum_steps,
        micro_batch_size=loop.micro_batch_size,
    )
    batches = TokenBatches(corpus(), loop.seq_len, loop.micro_batch_size, seed=loop.seed)
    losses: list[float] = []

    def loss_fn(eng, batch):
        loss, stats = lm_loss_fn(eng, batch)
        stats["load_balance"] = load_balance(stats)
        return loss, stats

    train(
        engine,
        batches,
        loss_fn,
        loop,
        checkpoint_dir=checkpoint_dir,
        on_log=lambda step, metrics: losses.append(metrics["loss"]),
        after_step=expert_bias_updater(engine, cfg.router_bias_update_rate),
    )
    return losses


def write_golden(losses: list[float]) -> None:
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "about": "per-step losses of tests/pretrain/golden_run.py; regenerate only deliberately "
        "(LING26_REGENERATE_GOLDEN=1 or python tests/pretrain/golden_run.py --write) and say why in the commit",
        "steps": len(losses),
        "losses": losses,
        "losses_hex": float_hex(losses),
        "recorded_on": cpu_fingerprint(),
    }
    GOLDEN.write_text(json.dumps(payload, indent=2) + "\n")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        trajectory = run(Path(tmp))
    if "--write" in sys.argv[1:]:
        write_golden(trajectory)
    print(json.dumps({"losses_hex": float_hex(trajectory), "fingerprint": cpu_fingerprint()}))
