"""Subprocess entry of the equivalence-class tests: train the MoE base and the hybrid in every setup of one
world size, record what each step did, and write it down.

    python -m training.launch --nproc 2 equivalence_worker:main --out DIR

Every setup sees the same global batch of ``GLOBAL_BATCH`` windows per optimizer step (micro-batch x
accumulation x ranks) from the same ``TokenBatches`` order. Per model and setup, rank 0 writes
``DIR/<model>-<setup>.json`` (per-step loss, grad norm, global expert loads) and
``DIR/<model>-<setup>.safetensors`` (the final full weights, expert biases included).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from training_toys import VOCAB, markov_tokens

from configs.model import ModelConfig
from configs.training import EngineConfig, OptimConfig, TrainLoopConfig
from model import HybridForCausalLM, Ling2ForCausalLM, moe, update_expert_bias
from training.builder import build_engine
from training.data import TokenBatches
from training.lm import expert_bias_updater, lm_loss_fn
from training.loop import train

STEPS = 5
GLOBAL_BATCH = 8
SEQ_LEN = 16
# Larger than the profiles' (1e-3, 3.5e-6) so that within STEPS the bias moves routing and the z-loss has a
# gradient that counts: a setup that got either wrong would show in the losses, not hide under round-off.
BIAS_RATE = 1e-2
Z_LOSS = 1e-2


@dataclasses.dataclass(frozen=True, kw_only=True)
class Setup:
    world: int
    zero_stage: int
    micro_batch: int
    grad_accum: int
    # Negative control: each rank updates its expert bias from its own loads, not the loads of all ranks.
    local_bias_update: bool = False
    # Rank 0's MoE blocks always take the padded-bmm path, the other ranks' the per-expert loop: ZeRO-3 must
    # not depend on every rank running the same submodules (training/deepspeed_engine.py).
    mixed_moe_paths: bool = False

    def __post_init__(self) -> None:
        assert self.world * self.micro_batch * self.grad_accum == GLOBAL_BATCH, self


SETUPS = {
    "z0-mb8": Setup(world=1, zero_stage=0, micro_batch=8, grad_accum=1),
    "z3-mb8": Setup(world=1, zero_stage=3, micro_batch=8, grad_accum=1),
    "z0-mb1x8": Setup(world=1, zero_stage=0, micro_batch=1, grad_accum=8),
    "z0-2x4": Setup(world=2, zero_stage=0, micro_batch=4, grad_accum=1),
    "z3-2x4": Setup(world=2, zero_stage=3, micro_batch=4, grad_accum=1),
    "z3-2x1x4": Setup(world=2, zero_stage=3, micro_batch=1, grad_accum=4),
    "z3-2x4-mixed-paths": Setup(world=2, zero_stage=3, micro_batch=4, grad_accum=1, mixed_moe_paths=True),
    "z0-2x4-local-bias": Setup(world=2, zero_stage=0, micro_batch=4, grad_accum=1, local_bias_update=True),
}


def tiny_config(kind: str) -> ModelConfig:
    """A few layers of hidden 32 with every feature the equivalences can break on: MoE with shared expert,
    group-limited routing, expert bias, z-loss and an MTP layer; the hybrid adds two Lightning layers
    (chunked: chunk 8 < seq 16) and one MLA layer, one of each Lightning kind of FFN (dense, MoE)."""
    common = dict(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        rope_theta=10000.0,
        max_position_embeddings=64,
        num_experts=8,
        num_experts_per_tok=2,
        n_group=4,
        topk_group=2,
        moe_intermediate_size=16,
        first_k_dense_replace=1,
        initializer_range=0.08,
        router_bias_update_rate=BIAS_RATE,
        router_z_loss_coeff=Z_LOSS,
        group_norm_size=2,
        lightning_chunk_size=8,
        q_lora_rank=16,
        kv_lora_rank=16,
        qk_rope_head_dim=8,
        qk_nope_head_dim=8,
        v_head_dim=8,
    )
    if kind == "ling2":
        return ModelConfig(**common, num_hidden_layers=2, layer_group_size=2)
    # Layers: Lightning (dense FFN), Lightning (MoE), MLA (MoE); the MTP layer is MLA (MoE).
    return ModelConfig(**common, num_hidden_layers=3, layer_group_size=3)


MODELS: dict[str, Callable[[ModelConfig], torch.nn.Module]] = {"ling2": Ling2ForCausalLM, "hybrid": HybridForCausalLM}


def run_setup(kind: str, name: str, setup: Setup, tokens: np.ndarray, out: Path) -> None:
    default_ratio = moe.MAX_PADDING_RATIO
    if setup.mixed_moe_paths:
        # E * capacity <= ratio * N * A decides the path: always true at inf, never at 0.
        moe.MAX_PADDING_RATIO = float("inf") if int(os.environ.get("RANK", "0")) == 0 else 0.0
    try:
        train_setup(kind, name, setup, tokens, out)
    finally:
        moe.MAX_PADDING_RATIO = default_ratio


def train_setup(kind: str, name: str, setup: Setup, tokens: np.ndarray, out: Path) -> None:
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    config = tiny_config(kind)
    loop = TrainLoopConfig(
        max_steps=STEPS,
        micro_batch_size=setup.micro_batch,
        grad_accum_steps=setup.grad_accum,
        seq_len=SEQ_LEN,
        log_every=1,
        checkpoint_every=STEPS,
        keep_checkpoints=1,
        seed=0,
    )
    engine = build_engine(
        MODELS[kind](config),
        EngineConfig(backend="deepspeed", zero_stage=setup.zero_stage),
        # Warmup of 2 steps then lr 1e-2: large enough that five steps move routing, small enough to stay stable.
        OptimConfig(lr=1e-2, warmup_steps=2),
        total_steps=STEPS,
        grad_accum_steps=setup.grad_accum,
        micro_batch_size=setup.micro_batch,
    )
    assert engine.world_size == setup.world, (engine.world_size, setup)
    batches = TokenBatches(tokens, SEQ_LEN, setup.micro_batch, seed=0, rank=engine.rank, world_size=engine.world_size)
    record: dict[str, Any] = {"loss": [], "grad_norm": [], "tokens_per_expert": []}
    update_bias = expert_bias_updater(engine, config.router_bias_update_rate)

    def after_step(module: torch.nn.Module, stats: dict[str, Any]) -> None:
        counts = stats["tokens_per_expert"]  # [L_moe, E], mean over this rank's micro-batches
        # Loads summed over the whole optimizer step (all micro-batches, all ranks): integers, compared exactly.
        global_counts = engine.all_reduce_mean(counts) * setup.grad_accum * setup.world
        record["tokens_per_expert"].append(global_counts.round().long().tolist())
        if setup.local_bias_update:
            update_expert_bias(module, counts, config.router_bias_update_rate)
        else:
            update_bias(module, stats)

    def on_log(step: int, metrics: dict[str, float]) -> None:
        record["loss"].append(metrics["loss"])
        record["grad_norm"].append(metrics["grad_norm"])

    train(
        engine, batches, lm_loss_fn, loop, checkpoint_dir=out / "ckpt" / f"{kind}-{name}", on_log=on_log,
        after_step=after_step,
    )  # fmt: skip
    weights = engine.full_state_dict()  # collective: every rank gathers its ZeRO-3 shards
    if engine.is_main:
        from safetensors.torch import save_file

        (out / f"{kind}-{name}.json").write_text(json.dumps({"world_size": engine.world_size, **record}))
        save_file({k: v.contiguous() for k, v in weights.items()}, str(out / f"{kind}-{name}.safetensors"))


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    args.out.mkdir(parents=True, exist_ok=True)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    tokens = markov_tokens(4000)
    for kind in MODELS:
        for name, setup in SETUPS.items():
            if setup.world == world:
                run_setup(kind, name, setup, tokens, args.out)
