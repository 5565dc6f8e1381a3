"""SFT on shortest-correct responses (METHODS §6.2): the rows (selection + pruning of verified candidates) and
the phase, whose updates run through ``training.loop.train`` so it checkpoints and resumes like pre-training."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from configs import PipelineConfig
from data_contracts.training_rows import SFT_DTYPES
from training.post_train.common import phase_engine, phase_loop, run_phase

OnLog = Callable[[str, int, Mapping[str, float]], None]


def sft_rows(
    candidates: pd.DataFrame, sft: pd.DataFrame, envs: Mapping[str, Any], tasks_by_id: Mapping[str, Any], mode: str
) -> tuple[pd.DataFrame, dict[str, float]]:
    """``SFTExample`` rows: the plain full-length SFT table, or shortest-correct selection + pruning."""
    if mode == "full":
        return sft, {"mean_response_chars": float(sft["response"].str.len().mean())}
    from training.objectives import select_shortest_correct

    # Curation verified every candidate already; only pruned variants need the verifier (and the sandbox).
    known = {(r.prompt_id, r.response): bool(r.correct) for r in candidates.itertuples()}

    def verify(prompt_id: str, text: str) -> bool:
        if (prompt_id, text) not in known:
            task = tasks_by_id[prompt_id]
            known[prompt_id, text] = envs[task.family].verify(task, text).correct
        return known[prompt_id, text]

    selected, stats = select_shortest_correct(
        ({"prompt_id": r.prompt_id, "text": r.response} for r in candidates.itertuples()), verify
    )
    by_response = {(r.prompt_id, r.response): r for r in candidates.itertuples()}
    rows = pd.DataFrame(
        [
            _sft_row(by_response[s["prompt_id"], s["original_text"]], s["text"], known[s["prompt_id"], s["text"]])
            for s in selected
        ],
        columns=list(SFT_DTYPES),
    )
    stats = {k: float(v) for k, v in stats.items()}
    stats["mean_response_chars"] = float(rows["n_chars"].sum()) / max(1, len(rows))
    stats["full_mean_response_chars"] = float(sft["response"].str.len().mean())
    return rows, stats


def _sft_row(candidate: Any, response: str, correct: bool) -> dict[str, Any]:
    """The candidate's metadata with the (possibly pruned) response and the verifier's verdict on it."""
    return {
        "prompt_id": candidate.prompt_id,
        "family": candidate.family,
        "difficulty": int(candidate.difficulty),
        "prompt": candidate.prompt,
        "response": response,
        "style": candidate.style,
        "correct": correct,
        "n_chars": len(response),
    }


class SFTBatches:
    """Random rows of the packed table, ``batch_size`` per update, drawn with the phase's own CPU generator
    (seeded once, as the phase always drew them). The generator's state is the data position a checkpoint
    keeps; the table itself lives on the model's device, so each batch is one gather there."""

    def __init__(self, ids_NT: torch.Tensor, mask_NT: torch.Tensor, batch_size: int, seed: int) -> None:
        self.ids_NT, self.mask_NT, self.batch_size = ids_NT, mask_NT, batch_size
        self.generator = torch.Generator().manual_seed(seed)

    def __iter__(self) -> SFTBatches:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        pick = torch.randint(0, self.ids_NT.shape[0], (self.batch_size,), generator=self.generator)
        pick = pick.to(self.ids_NT.device)
        return {"ids": self.ids_NT[pick], "mask": self.mask_NT[pick]}

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])


def sft_loss_fn(engine, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    from training.objectives import sft_loss

    out = engine(batch["ids"])
    loss, stats = sft_loss(out.logits, batch["ids"], batch["mask"])
    return loss, {"accuracy": stats["accuracy"]}


def sft_phase(
    model, tokenizer, rows: pd.DataFrame, cfg: PipelineConfig, on_log: OnLog, *, checkpoint_dir: Path | None = None
) -> dict[str, float]:
    """Train ``model`` in place on the packed rows; resumes from the newest checkpoint in ``checkpoint_dir``
    (a finished phase just loads its final weights). Logs every ``log_every`` steps and at the last."""
    from corpus.tokenizer import EOS, PAD
    from training.objectives import pack_examples

    p = cfg.post_train.sft
    encode = lambda text: tokenizer.encode(text, add_special_tokens=False).ids  # noqa: E731
    ids_NT, mask_NT = pack_examples(
        [encode(text) for text in rows["prompt"]],
        [encode(text) for text in rows["response"]],
        p.seq_len,
        tokenizer.token_to_id(PAD),
        tokenizer.token_to_id(EOS),
    )
    engine = phase_engine(model, cfg.post_train.engine, p.optim, updates=p.steps)
    batches = SFTBatches(ids_NT.to(engine.device), mask_NT.to(engine.device), p.batch_size, cfg.seed)

    def on_update(step: int, metrics: Mapping[str, float]) -> None:
        if step % p.log_every == 0 or step == p.steps:
            on_log("sft", step, _reported(metrics))

    loop = phase_loop(
        updates=p.steps,
        batch_size=p.batch_size,
        seq_len=p.seq_len,
        checkpoint_every=p.checkpoint_every,
        keep=cfg.post_train.keep_checkpoints,
    )
    result = run_phase(engine, batches, sft_loss_fn, loop, checkpoint_dir, on_update)
    return {"packed_rows": float(ids_NT.shape[0]), **_reported(result.metrics)}


def _reported(metrics: Mapping[str, float]) -> dict[str, float]:
    """The phase's names for one update's loop metrics (the loop's per-update values, nothing averaged)."""
    return {
        "loss": float(metrics["loss"]),
        "token_accuracy": float(metrics["accuracy"]),
        "grad_norm": float(metrics["grad_norm"]),
    }
