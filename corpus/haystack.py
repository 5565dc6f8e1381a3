"""Retrieval haystacks for the migration stage's context extension, built by curation.

``write_haystacks`` draws ``migrate.context_extension.train_haystacks`` pass-key haystacks with
``evals.long_context.haystack`` (the evaluation's generator) under its own random stream (``NAMESPACE``), so
no training haystack is one the evaluation reads; the contract (``data_contracts.haystack``) also quarantines
any row whose needle names someone an evaluation haystack asks about. Lengths are drawn between an eighth of
the longest extension stage (at least ``SHORTEST``) and that stage less room for the answer, depths uniformly
in [0, 1].

Outputs in the curate folder: ``haystack.parquet`` (``HaystackRow``) and ``haystack_quarantine.parquet``
(``QuarantineRow``: the rows a rule rejected, with the rule).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import pandas as pd

from configs import PipelineConfig
from configs.evaluation import RetrievalConfig
from configs.migrate import ContextExtensionConfig

HAYSTACK_FILE = "haystack.parquet"
QUARANTINE_FILE = "haystack_quarantine.parquet"
NAMESPACE = "train-haystack"
# Tokens kept free after a training prompt for " <answer>\n" (a 5-digit key is at most 6 tokens here).
ANSWER_ROOM = 16
# No training haystack is shorter than 64 tokens, nor than a haystack without filler (header, needle, question:
# ~40 tokens of the tiny profile's tokenizer) with room to spare; names have at most 3 syllables and a coda.
SHORTEST = 64
LONGEST_BARE_PROMPT = "[recall] Find the pass key in the text.\nThe pass key of Strontaxil is 99999.\n" + (
    "What is the pass key of Strontaxil?\n"
)


def train_haystacks(count_tokens: Callable[[str], int], ext: ContextExtensionConfig, *, seed: int) -> pd.DataFrame:
    """The raw table of training haystacks (before the contract): one row per haystack."""
    from evals.long_context import haystack

    longest = ext.max_seq_len - ANSWER_ROOM
    shortest = max(longest // 8, SHORTEST, count_tokens(LONGEST_BARE_PROMPT) + ANSWER_ROOM)
    rng = random.Random(f"{NAMESPACE}|draws|{seed}")
    rows = []
    for i in range(ext.train_haystacks if longest >= shortest else 0):
        length = rng.randint(shortest, longest)
        depth = round(rng.random(), 3)
        stack = haystack(count_tokens, length, depth, seed * ext.train_haystacks + i, namespace=NAMESPACE)
        rows.append({"haystack_id": f"train-{seed}-{i}", "length": length, "depth": depth, "prompt": stack.prompt,
                     "answer": stack.answer, "name": stack.name, "prompt_tokens": stack.prompt_tokens})  # fmt: skip
    return pd.DataFrame(rows, columns=["haystack_id", "length", "depth", "prompt", "answer", "name", "prompt_tokens"])


def migrate_retrieval_config(ext: ContextExtensionConfig) -> RetrievalConfig:
    """The grid the migration stage measures retrieval on, before and after extension."""
    return RetrievalConfig(lengths=ext.retrieval_lengths, depths=ext.retrieval_depths,
                           samples_per_cell=ext.retrieval_samples_per_cell)  # fmt: skip


def eval_names(count_tokens: Callable[[str], int], cfg: PipelineConfig) -> set[str]:
    """Every name an evaluation haystack of this pipeline asks about: the migration stage's before/after grid
    and the evaluation stage's grid, at their seeds."""
    from evals.long_context import eval_haystacks

    grids = ((migrate_retrieval_config(cfg.migrate.context_extension), cfg.seed),
             (cfg.evaluate.retrieval, cfg.evaluate.seed))  # fmt: skip
    return {s.name.lower() for grid, seed in grids if grid.lengths for s in eval_haystacks(count_tokens, grid, seed)}


def write_haystacks(
    cfg: PipelineConfig, out_dir: Path, *, names_to_avoid: Collection[str] | None = None, run: Any = None
) -> dict[str, Any]:
    """Build, screen and write the training haystacks into the curate folder ``out_dir`` (its tokenizer measures
    lengths); returns the table's contract counts, also logged into the MLflow ``run`` when given (with the table
    as a dataset output). ``names_to_avoid`` defaults to ``eval_names``."""
    from corpus.tokenizer import load_tokenizer
    from data_contracts.haystack import TABLE, screen_haystacks
    from data_contracts.quarantine import QuarantineLedger

    tokenizer = load_tokenizer(out_dir / "tokenizer")

    def count_tokens(text: str) -> int:
        return len(tokenizer.encode(text).ids)

    raw = train_haystacks(count_tokens, cfg.migrate.context_extension, seed=cfg.seed)
    avoid = eval_names(count_tokens, cfg) if names_to_avoid is None else names_to_avoid
    ledger = QuarantineLedger()
    kept = screen_haystacks(raw, count_tokens, avoid, ledger)
    kept.to_parquet(out_dir / HAYSTACK_FILE, index=False)
    ledger.frame().to_parquet(out_dir / QUARANTINE_FILE, index=False)
    counts = {"rows_in": len(raw), "rows_kept": len(kept), "rows_quarantined": ledger.count(TABLE)}
    if run is not None:
        run.log_metrics({f"haystack.{k}": v for k, v in counts.items()})
        run.log_table_input(kept, name="curate/haystack", source=out_dir / HAYSTACK_FILE, context="output")
    return {**counts, "quarantined_by_rule": ledger.counts(TABLE)}
