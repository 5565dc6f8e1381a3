"""The pre-training stage as a plain function: train the Ling-2.0 base on the curated shards (or import
an existing checkpoint), anneal by checkpoint merging (WSM), evaluate, and export the official layout.

Outputs under ``out_dir``:
  checkpoint/             HF folder (BailingMoeV2ForCausalLM, safetensors, modeling files, tokenizer)
  eval_summary.parquet    EvalResult rows per family (+ "all")
  eval_rollouts.parquet   every eval response with its verdict and token count
  metrics.json            held-out loss (last vs merged), unigram baseline, training summary
Training checkpoints (for resume) live under the state folder, not in DVC. Under a launcher every rank
trains (data-parallel); rank 0 alone then merges, evaluates and writes the outputs, the others return
their training metrics.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from configs import PipelineConfig, config_hash

log = logging.getLogger(__name__)
OnLog = Callable[[int, Mapping[str, float]], None]


def pretrain_checkpoint_root() -> Path:
    """Where the stage keeps its training checkpoints (for resume): the state folder, not DVC."""
    from lineage.paths import state_dir

    return state_dir() / "checkpoints" / "pretrain"


def run_pretrain(
    cfg: PipelineConfig, curated: Path, out_dir: Path, *, checkpoint_root: Path, on_log: OnLog | None = None
) -> dict[str, Any]:
    from corpus.shards import read_shards
    from corpus.tokenizer import EOS, PAD, load_tokenizer
    from evals.harness import evaluate_policy, heldout_loss, unigram_loss
    from evals.tasks import eval_tasks
    from inference.native import NativeEngine
    from kernels.dispatch import place
    from model import Ling2ForCausalLM, count_parameters, export_hf, load_hf
    from training.builder import build_engine
    from training.data import TokenBatches
    from training.lm import expert_bias_updater, lm_loss_fn, load_balance
    from training.loop import train
    from training.merge import load_merged

    pcfg, loop = cfg.pretrain, cfg.pretrain.loop
    torch.manual_seed(cfg.seed)
    tokenizer = load_tokenizer(curated / "tokenizer")
    train_tokens = read_shards(curated / "shards", "train")
    heldout_tokens = read_shards(curated / "shards", "heldout")
    metrics: dict[str, Any] = {"unigram_heldout_loss": unigram_loss(train_tokens, heldout_tokens, cfg.model.vocab_size)}

    if pcfg.base_checkpoint:
        # No engine here to place it: the imported base goes where the trained one would (the one decision).
        model = place(load_hf(pcfg.base_checkpoint, base=cfg.model))
        metrics["imported_from"] = pcfg.base_checkpoint
    else:
        model = Ling2ForCausalLM(cfg.model)
        engine = build_engine(
            model,
            pcfg.engine,
            pcfg.optim,
            total_steps=loop.max_steps,
            grad_accum_steps=loop.grad_accum_steps,
            micro_batch_size=loop.micro_batch_size,
        )
        batches = TokenBatches(
            train_tokens,
            loop.seq_len,
            loop.micro_batch_size,
            seed=loop.seed + cfg.seed,
            rank=engine.rank,
            world_size=engine.world_size,
        )
        run_dir = checkpoint_root / config_hash(cfg)

        def log_metrics(step: int, m: Mapping[str, float]) -> None:
            if on_log is not None:
                on_log(step, m)

        def loss_fn(eng, batch):
            loss, stats = lm_loss_fn(eng, batch)
            if "tokens_per_expert" in stats:
                stats["load_balance"] = load_balance(stats)
            return loss, stats

        result = train(
            engine,
            batches,
            loss_fn,
            loop,
            checkpoint_dir=run_dir,
            on_log=log_metrics,
            after_step=expert_bias_updater(engine, cfg.model.router_bias_update_rate),
        )
        metrics.update({f"train_{k}": float(v) for k, v in result.metrics.items()})
        metrics.update(resumed_from_step=result.resumed_from, world_size=engine.world_size)
        # Weights leave the engine only through it: under ZeRO-3 each rank holds shards, so every rank takes
        # part in gathering them (full_module) and in loading the merge (load_merged) before rank 0 goes on.
        model = engine.full_module()
        if engine.is_main:
            model.eval()
            metrics["heldout_loss_last"] = heldout_loss(
                model, heldout_tokens, seq_len=loop.seq_len, max_windows=pcfg.eval.heldout_windows
            )
        model = load_merged(engine, list(result.checkpoints)[-pcfg.optim.merge_last_k :])
        if not engine.is_main:
            # Evaluation and export are rank 0's.
            return metrics
        metrics["merged_checkpoints"] = min(len(result.checkpoints), pcfg.optim.merge_last_k)

    model.eval()
    total, active = count_parameters(model)
    metrics.update({"params_total": total, "params_active": active})
    metrics["heldout_loss"] = heldout_loss(
        model, heldout_tokens, seq_len=loop.seq_len, max_windows=pcfg.eval.heldout_windows
    )
    from inference.sampling import SamplingParams

    engine_native = NativeEngine(model, tokenizer, eos_id=tokenizer.token_to_id(EOS), pad_id=tokenizer.token_to_id(PAD))
    summary, rollouts = evaluate_policy(
        engine_native,
        _environments(cfg),
        eval_tasks(curated, pcfg.eval.prompts_per_family),
        checkpoint="pretrain",
        params=SamplingParams(temperature=0.0, max_new_tokens=pcfg.eval.max_new_tokens),
        max_turns=pcfg.eval.max_tool_turns,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = out_dir / "checkpoint"
    if checkpoint.exists():
        shutil.rmtree(checkpoint)
    export_hf(model, checkpoint)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(curated / "tokenizer" / name, checkpoint / name)
    summary.to_parquet(out_dir / "eval_summary.parquet", index=False)
    rollouts.to_parquet(out_dir / "eval_rollouts.parquet", index=False)
    metrics["eval"] = summary.to_dict("records")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float) + "\n")
    return metrics


def _environments(cfg: PipelineConfig) -> dict[str, Any]:
    from environments import all_environments

    return all_environments(cfg.environments)
