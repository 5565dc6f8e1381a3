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
