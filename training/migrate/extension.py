"""Context extension: mid-training at longer contexts at the end of the migration stage (METHODS §3.1), after
continued pre-training and its merge.

Each stage of ``migrate.context_extension`` YaRN-scales the MLA layers' rotary part to its length
(``model.rope_scaling``: factor = stage length / the migration's context ``migrate.seq_len``; the Lightning
layers' rotary stays as trained), then trains everything on a mix of

    long documents   windows of seq_len + 1 tokens of the curated train stream (documents concatenated),
                     ``long_document_fraction`` of each batch's rows
    haystacks        a pass-key haystack from curation (``haystack.parquet``) and its answer, the rest of the
                     row filled from the train stream

with the lower expert-bias update rate of mid-training. Retrieval by length and depth is measured before and
after on the same prompts (``evals.long_context``), and the held-out loss on the migration's short windows
is measured after, for the parity gate.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from configs.migrate import ContextExtensionConfig, ExtensionStageConfig, MigrateConfig, MigratePhaseConfig
from configs.model import RopeScalingConfig

log = logging.getLogger(__name__)


class ExtensionBatches:
    """Resumable ``[micro_batch_size, seq_len + 1]`` rows of the extension mix for one rank.

    Step ``n``'s global batch (``micro_batch_size · world_size`` rows) is a pure function of (seed, n): the
    first ``round(fraction · rows)`` rows are long-document windows at random window offsets of the stream,
    the others random haystacks, each followed by the stream from a random offset. Rank ``r`` takes rows
    ``[r·B, (r+1)·B)``. The state is the step count, so a resumed run continues with the very next batch."""

    def __init__(self, tokens: np.ndarray, haystacks: list[np.ndarray], seq_len: int, micro_batch_size: int,
                 long_document_fraction: float, seed: int, *, rank: int = 0, world_size: int = 1) -> None:  # fmt: skip
        width = seq_len + 1
        if len(tokens) < width:
            raise ValueError(f"the train stream ({len(tokens)} tokens) is shorter than one window of {width}")
        # A haystack longer than the row would lose its answer: a shorter stage trains on those that fit.
        haystacks = [h for h in haystacks if len(h) <= width]
        if long_document_fraction < 1.0 and not haystacks:
            raise ValueError(f"the extension mix asks for haystack rows, but no curated haystack fits {width} tokens")
        self.tokens, self.haystacks, self.width = tokens, haystacks, width
        self.micro_batch_size, self.rank, self.world_size, self.seed = micro_batch_size, rank, world_size, seed
        self.rows = micro_batch_size * world_size
        self.long_rows = round(long_document_fraction * self.rows)
        self.step = 0

    def __iter__(self) -> ExtensionBatches:
        return self

    def global_batch(self, step: int) -> np.ndarray:
        """[rows, seq_len + 1] every rank's rows of step ``step``."""
        rng = np.random.default_rng([self.seed, step])
        windows = (len(self.tokens) - 1) // (self.width - 1)
        out = np.empty((self.rows, self.width), dtype=np.int64)
        for row in range(self.rows):
            if row < self.long_rows:
                start = int(rng.integers(windows)) * (self.width - 1)
                out[row] = self.tokens[start : start + self.width]
                continue
            stack = self.haystacks[int(rng.integers(len(self.haystacks)))]
            fill = self.width - len(stack)
            start = int(rng.integers(len(self.tokens) - fill + 1))
            out[row] = np.concatenate((stack, self.tokens[start : start + fill]))
        return out

    def __next__(self) -> torch.Tensor:
        rows = self.global_batch(self.step)[self.rank * self.micro_batch_size : (self.rank + 1) * self.micro_batch_size]
        self.step += 1
        return torch.from_numpy(rows)

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step, "seed": self.seed, "width": self.width, "rows": self.rows,
                "long_rows": self.long_rows, "n_tokens": len(self.tokens), "n_haystacks": len(self.haystacks)}  # fmt: skip

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        mine = self.state_dict()
        for key in ("seed", "width", "rows", "long_rows", "n_tokens", "n_haystacks"):
            if state[key] != mine[key]:
                raise ValueError(
                    f"extension data state was saved with {key}={state[key]}, these batches have {mine[key]}"
                )
        self.step = state["step"]


def haystack_token_rows(frame: pd.DataFrame, encode: Callable[[str], list[int]], eos_id: int) -> list[np.ndarray]:
    """Each haystack as training tokens: the prompt as the evaluation encodes it, then the answer, a newline and
    EOS (the answer is what generation after the prompt must produce)."""
    return [np.asarray([*encode(p), *encode(a + "\n"), eos_id], dtype=np.int64)
            for p, a in zip(frame["prompt"], frame["answer"], strict=True)]  # fmt: skip


def rope_scaling_for(ext: ContextExtensionConfig, seq_len: int, original: int) -> RopeScalingConfig:
    """YaRN for a stage of ``seq_len`` over the ``original`` context the model was trained at."""
    return RopeScalingConfig(factor=seq_len / original, original_max_position_embeddings=original,
                             beta_fast=ext.yarn_beta_fast, beta_slow=ext.yarn_beta_slow, mscale=ext.yarn_mscale,
                             mscale_all_dim=ext.yarn_mscale_all_dim)  # fmt: skip


def scale_rope(model: nn.Module, scaling: RopeScalingConfig, seq_len: int) -> None:
    """Give ``model`` (the hybrid) ``scaling`` and a position limit covering ``seq_len``, weights unchanged."""
    from model.hybrid import set_rope_scaling

    config = model.config
    positions = max(config.max_position_embeddings, seq_len)
    model.config = dataclasses.replace(config, rope_scaling=scaling, max_position_embeddings=positions)
    set_rope_scaling(model, scaling)


def measure_retrieval(model: nn.Module, tokenizer: Any, ext: ContextExtensionConfig, *, checkpoint: str, seed: int,
                      trained_context: int) -> pd.DataFrame:  # fmt: skip
    """``RetrievalRow`` per (length, depth) of the extension's grid: the same prompts for every ``checkpoint``."""
    from corpus.haystack import migrate_retrieval_config
    from corpus.tokenizer import EOS, PAD
    from evals.long_context import evaluate_retrieval
    from inference.native import NativeEngine

    model.eval()
    engine = NativeEngine(model, tokenizer, eos_id=tokenizer.token_to_id(EOS), pad_id=tokenizer.token_to_id(PAD),
                          batch_size=ext.retrieval_samples_per_cell * len(ext.retrieval_depths))  # fmt: skip
    return evaluate_retrieval(engine, migrate_retrieval_config(ext), checkpoint=checkpoint, seed=seed,
                              trained_context=trained_context)  # fmt: skip


def train_stage(
    name: str,
    stage: ExtensionStageConfig,
    model: nn.Module,
    mcfg: MigrateConfig,
    train_tokens: np.ndarray,
    stacks: list[np.ndarray],
    *,
    checkpoint_dir: Path,
    data_seed: int,
    step_offset: int,
    on_log: Callable[[str, int, Mapping[str, float]], None] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """One extension stage: YaRN to ``stage.seq_len``, then every parameter trained on the mix (resuming from
    ``checkpoint_dir`` like every phase) with the extension's expert-bias rate; returns the model and its info."""
    from model.migration import unfreeze_all
    from training.migrate.phases import train_phase

    ext = mcfg.context_extension
    scaling = rope_scaling_for(ext, stage.seq_len, mcfg.seq_len)
    scale_rope(model, scaling, stage.seq_len)

    def make_batches(rank: int, world_size: int) -> ExtensionBatches:
        return ExtensionBatches(train_tokens, stacks, stage.seq_len, stage.micro_batch_size,
                                stage.long_document_fraction, data_seed, rank=rank, world_size=world_size)  # fmt: skip

    phase = MigratePhaseConfig(steps=stage.steps, lr=stage.lr, warmup_steps=stage.warmup_steps)
    result = train_phase(name, model, unfreeze_all, phase, mcfg, train_tokens, checkpoint_dir=checkpoint_dir,
                         data_seed=data_seed, step_offset=step_offset, update_router_bias=True,
                         router_bias_update_rate=ext.router_bias_update_rate, seq_len=stage.seq_len,
                         micro_batch_size=stage.micro_batch_size, make_batches=make_batches,
                         on_log=on_log)  # fmt: skip
    info = {**result.info, "seq_len": stage.seq_len, "yarn_factor": scaling.factor,
            "long_document_fraction": stage.long_document_fraction}  # fmt: skip
    return result.model, info


def extend_context(
    model: nn.Module,
    mcfg: MigrateConfig,
    train_tokens: np.ndarray,
    curated: Path,
    *,
    run_dir: Path,
    data_seed: int,
    retrieval_seed: int,
    step_offset: int,
    on_log: Callable[[str, int, Mapping[str, float]], None] | None = None,
) -> tuple[nn.Module, dict[str, Any], pd.DataFrame]:
    """Run every extension stage on ``model`` (trained at ``mcfg.seq_len``); returns the extended model, the
    stage summary (per stage: steps, length, YaRN factor, bias rate, training metrics) and the retrieval table
    (``checkpoint`` "before_extension" / "after_extension")."""
    from corpus.haystack import HAYSTACK_FILE
    from corpus.tokenizer import EOS, load_tokenizer
    from data_contracts.haystack import HaystackRow

    ext = mcfg.context_extension
    tokenizer = load_tokenizer(curated / "tokenizer")
    log.info("migrate: context extension: retrieval before, %d lengths", len(ext.retrieval_lengths))
    before = measure_retrieval(model, tokenizer, ext, checkpoint="before_extension", seed=retrieval_seed,
                               trained_context=mcfg.seq_len)  # fmt: skip
    frame = HaystackRow.validate(pd.read_parquet(curated / HAYSTACK_FILE))
    stacks = haystack_token_rows(frame, lambda text: tokenizer.encode(text).ids, tokenizer.token_to_id(EOS))
    summary: dict[str, Any] = {"haystacks": len(stacks), "stages": []}
    step = step_offset
    for index, stage in enumerate(ext.stages):
        name = f"context_extension_{index}"
        model, info = train_stage(name, stage, model, mcfg, train_tokens, stacks, checkpoint_dir=run_dir / name,
                                  data_seed=data_seed + index, step_offset=step, on_log=on_log)  # fmt: skip
        step += info["steps"]
        summary["stages"].append(info)
        log.info("migrate: %s done (%d steps at %d tokens, YaRN factor %g)", name, stage.steps, stage.seq_len,
                 info["yarn_factor"])  # fmt: skip
    model.requires_grad_(False)
    after = measure_retrieval(model, tokenizer, ext, checkpoint="after_extension", seed=retrieval_seed,
                              trained_context=ext.max_seq_len)  # fmt: skip
    log.info("migrate: context extension: retrieval after, mean accuracy %.3f", after["accuracy"].mean())
    summary["steps"] = step - step_offset
    summary["rope_scaling"] = dataclasses.asdict(model.config.rope_scaling)
    return model, summary, pd.concat([before, after], ignore_index=True)
