"""Subprocess entry of the resume and multi-process tests: train the toy LM, write losses as JSON.

    python training_worker.py --out DIR [--backend deepspeed --backend torch] [--zero-stage 2] ...

Each backend trains into ``DIR/<backend>/`` (checkpoints) and the main rank writes ``DIR/<backend>.json``.
Under torchrun it is started through ``training.launch`` as ``training_worker:main``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from training_toys import lm_loss, markov_tokens, toy_model

from configs.training import EngineConfig, OptimConfig, TrainLoopConfig
from training import TokenBatches, build_engine, train


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--backend", action="append", choices=["deepspeed", "torch"])
    parser.add_argument("--zero-stage", type=int, default=2)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--checkpoint-every", type=int, default=4)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--sleep", type=float, default=0.0, help="seconds per step, to leave time for a SIGKILL")
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    tokens = markov_tokens(4000)
    for backend in args.backend or ["deepspeed"]:
        random.seed(0)
        np.random.seed(0)
        loop = TrainLoopConfig(
            max_steps=args.steps,
            micro_batch_size=args.micro_batch,
            grad_accum_steps=args.grad_accum,
            seq_len=16,
            log_every=1,
            checkpoint_every=args.checkpoint_every,
            keep_checkpoints=2,
            seed=0,
        )
        engine = build_engine(
            toy_model(seed=0, dropout=args.dropout),
            EngineConfig(backend=backend, zero_stage=args.zero_stage if backend == "deepspeed" else 0),
            OptimConfig(lr=1e-2, warmup_steps=3),
            total_steps=loop.max_steps,
            grad_accum_steps=loop.grad_accum_steps,
            micro_batch_size=loop.micro_batch_size,
        )
        batches = TokenBatches(
            tokens, loop.seq_len, loop.micro_batch_size, loop.seed, rank=engine.rank, world_size=engine.world_size
        )
        losses: dict[int, float] = {}
        result = train(
            engine,
            batches,
            lm_loss,
            loop,
            checkpoint_dir=args.out / backend,
            on_log=lambda step, metrics, losses=losses: losses.__setitem__(step, metrics["loss"]),
            after_step=(lambda module, stats: time.sleep(args.sleep)) if args.sleep else None,
        )
        if engine.is_main:
            report = {"losses": losses, "resumed_from": result.resumed_from, "world_size": engine.world_size}
            (args.out / f"{backend}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(sys.argv[1:])


def fail(argv: list[str]) -> None:
    """A worker that fails on rank 1 only: the launch as a whole must fail."""
    if os.environ["RANK"] == "1":
        raise RuntimeError("rank 1 fails on purpose")


def zero3_merge(argv: list[str]) -> None:
    """Train the toy LM under DeepSpeed ZeRO-3, then do what the pre-training and migration stages do after
    training: load the WSM merge through the engine and take its full module. Every rank writes the module's
    weights to ``DIR/module-rank{r}.safetensors``; rank 0 also writes ``DIR/report.json`` (losses, world size,
    the merged checkpoints, and whether the old path, ``module.load_state_dict`` on a ZeRO-3 module, fails).

        python -m training.launch --nproc 2 training_worker:zero3_merge --out DIR --micro-batch 4
    """
    from safetensors.torch import save_file

    from training.merge import load_merged, merge_checkpoints

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--micro-batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args(argv)

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    random.seed(0)
    np.random.seed(0)
    loop = TrainLoopConfig(
        max_steps=args.steps,
        micro_batch_size=args.micro_batch,
        grad_accum_steps=2,
        seq_len=16,
        log_every=1,
        checkpoint_every=2,
        keep_checkpoints=3,
        seed=0,
    )
    engine = build_engine(
        toy_model(seed=0, dropout=0.0),
        EngineConfig(backend="deepspeed", zero_stage=3),
        OptimConfig(lr=1e-2, warmup_steps=3),
        total_steps=loop.max_steps,
        grad_accum_steps=loop.grad_accum_steps,
        micro_batch_size=loop.micro_batch_size,
    )
    batches = TokenBatches(
        markov_tokens(4000),
        loop.seq_len,
        loop.micro_batch_size,
        loop.seed,
        rank=engine.rank,
        world_size=engine.world_size,
    )
    losses: dict[int, float] = {}
    result = train(
        engine,
        batches,
        lm_loss,
        loop,
        checkpoint_dir=args.out / "checkpoints",
        on_log=lambda step, metrics: losses.__setitem__(step, metrics["loss"]),
    )
    merged = list(result.checkpoints)[-2:]
    # The path the stages used to take: a ZeRO-3 module holds empty shards, so this cannot load full weights.
    try:
        engine.module.load_state_dict(merge_checkpoints(merged))
        old_path = "loaded"
    except RuntimeError as err:
        old_path = f"raised: {str(err).splitlines()[0]}"
    module = load_merged(engine, merged)
    args.out.mkdir(parents=True, exist_ok=True)
    weights = {name: t.detach().contiguous() for name, t in module.state_dict().items()}
    save_file(weights, str(args.out / f"module-rank{engine.rank}.safetensors"))
    if engine.is_main:
        report = {
            "losses": losses,
            "world_size": engine.world_size,
            "merged": [p.name for p in merged],
            "old_path": old_path,
            "module_is_engine_module": module is engine.module,
        }
        (args.out / "report.json").write_text(json.dumps(report))
