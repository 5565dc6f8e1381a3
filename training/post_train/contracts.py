"""The post-training stage's data contracts: its SFT rows and preference pairs are screened by
``data_contracts.training_rows`` with the bounds from the config, into one quarantine ledger
(``quarantine.parquet``, the curation stage's format); a table left empty stops the stage with what to do,
and the counts per table and rule go to ``metrics.json`` and MLflow."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from configs import PipelineConfig
from data_contracts import IntakeResult, QuarantineLedger, require_kept, screen_preference_pairs, screen_sft_rows
from data_contracts.training_rows import CountTokens

SFT_REMEDY = (
    "See table 'sft_rows' in data/post_train/quarantine.parquet for the rule each row broke. Rows longer than "
    "one packed row need a larger post_train.sft.seq_len (or post_train.contracts.max_response_chars); "
    "unverified or empty rows mean data/curate is stale or broken: re-run the curate stage."
)
PAIRS_REMEDY = (
    "See table 'preference_pairs' in data/post_train/quarantine.parquet for the rule each pair broke. Long "
    "pairs need a larger post_train.contracts.max_pair_tokens (or max_response_chars); to skip the phase, "
    "set post_train.preference.steps=0."
)


def token_counter(tokenizer: Any) -> CountTokens:
    """Tokens of a text as the phases encode it (no special tokens)."""
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False).ids)


def screen_sft(rows: pd.DataFrame, ledger: QuarantineLedger, cfg: PipelineConfig, tokenizer: Any) -> IntakeResult:
    """The SFT rows that pass their contract; ``NoRowsLeft`` when none do."""
    result = screen_sft_rows(
        rows,
        ledger,
        max_response_chars=cfg.post_train.contracts.max_response_chars,
        max_tokens=cfg.post_train.sft.seq_len,
        count_tokens=token_counter(tokenizer),
    )
    require_kept(result, remedy=SFT_REMEDY)
    return result


def screen_pairs(pairs: pd.DataFrame, ledger: QuarantineLedger, cfg: PipelineConfig, tokenizer: Any) -> IntakeResult:
    """One step's preference pairs that pass their contract (possibly none: a step may build no good pair)."""
    return screen_preference_pairs(
        pairs,
        ledger,
        max_response_chars=cfg.post_train.contracts.max_response_chars,
        max_tokens=cfg.post_train.contracts.max_pair_tokens,
        count_tokens=token_counter(tokenizer),
    )


def require_pairs(phase_pairs: IntakeResult) -> None:
    """A phase that built pairs but kept none of them trained on nothing: stop. A phase whose policy built
    no pair at all (no correct sample to prefer) is a training outcome, not a contract breach."""
    if phase_pairs.rows_in:
        require_kept(phase_pairs, remedy=PAIRS_REMEDY)


def contract_counts(results: Iterable[IntakeResult]) -> dict[str, dict[str, Any]]:
    """Rows in / kept / quarantined per table and rule; raises if a table's counts do not add up."""
    counts = {}
    for result in results:
        result.check_balance()
        counts[result.table] = {
            "rows_in": result.rows_in,
            "rows_kept": len(result.kept),
            "rows_quarantined": result.rows_quarantined,
            "quarantined_by_rule": dict(result.quarantined_by_rule),
        }
    return counts


def write_quarantine(ledger: QuarantineLedger, out_dir: Path) -> Path:
    path = out_dir / "quarantine.parquet"
    out_dir.mkdir(parents=True, exist_ok=True)
    ledger.frame().to_parquet(path, index=False)
    return path
