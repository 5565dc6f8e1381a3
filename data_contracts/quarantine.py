"""Row-level intake rules and the quarantine ledger.

Bad input never disappears: every input row that an intake rule rejects is either raised as a
``ContractViolation`` naming the row and the rule (``on_bad_rows="raise"``) or written to the ledger
(``"quarantine"``), and ``rows_in == rows_kept + rows_quarantined`` holds per table
(``IntakeResult.check_balance``). Filters that are part of normal curation (duplicates, eval overlap
of generated data) always quarantine: finding them is the point, not an error.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from data_contracts.schemas import QUARANTINE_RULES, QuarantineRow

OnBadRows = Literal["quarantine", "raise"]
EXCERPT_CHARS = 120


class ContractViolation(ValueError):
    """A row broke a contract rule and the caller asked for errors instead of quarantine."""

    def __init__(self, table: str, row_id: str, rule: str, detail: str):
        self.table, self.row_id, self.rule, self.detail = table, row_id, rule, detail
        super().__init__(f"{table}: row {row_id!r} breaks rule {rule!r}: {detail}")


def _excerpt(value: Any) -> str:
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="backslashreplace")
    text = str(value)
    # Surrogates cannot be written to parquet; show them escaped, as a reviewer would want to see them.
    text = text.encode("utf-8", errors="backslashreplace").decode("utf-8")
    return text[:EXCERPT_CHARS]


@dataclass
class QuarantineLedger:
    """Collects rejected rows across tables; ``frame()`` is the versioned quarantine file's content."""

    _rows: list[dict[str, str]] = field(default_factory=list)

    def add(self, table: str, row_id: Any, rule: str, detail: str, value: Any = "") -> None:
        if rule not in QUARANTINE_RULES:
            raise ValueError(f"unknown quarantine rule {rule!r}")
        row_id = _excerpt(row_id) if row_id is not None and not is_missing(row_id) else "<missing>"
        self._rows.append(
            {"row_id": row_id, "table": table, "rule": rule, "detail": detail, "excerpt": _excerpt(value)}
        )

    def frame(self) -> pd.DataFrame:
        df = pd.DataFrame(self._rows, columns=["row_id", "table", "rule", "detail", "excerpt"]).astype(str)
        return QuarantineRow.validate(df)

    def counts(self, table: str | None = None) -> dict[str, int]:
        return dict(Counter(r["rule"] for r in self._rows if table is None or r["table"] == table))

    def count(self, table: str) -> int:
        return sum(1 for r in self._rows if r["table"] == table)


class _RaisingLedger(QuarantineLedger):
    def add(self, table: str, row_id: Any, rule: str, detail: str, value: Any = "") -> None:
        raise ContractViolation(table, _excerpt(row_id), rule, detail)


@dataclass(frozen=True)
class IntakeResult:
    table: str
    rows_in: int
    kept: pd.DataFrame
    quarantined_by_rule: Mapping[str, int]

    @property
    def rows_quarantined(self) -> int:
        return sum(self.quarantined_by_rule.values())

    @classmethod
    def concat(cls, table: str, parts: Sequence[IntakeResult]) -> IntakeResult:
        """One table screened in parts (a phase's per-step batches) as one result."""
        kept = pd.concat([p.kept for p in parts], ignore_index=True) if parts else pd.DataFrame()
        by_rule = sum((Counter(p.quarantined_by_rule) for p in parts), Counter())
        return cls(table, sum(p.rows_in for p in parts), kept, dict(by_rule))

    def check_balance(self) -> None:
        if self.rows_in != len(self.kept) + self.rows_quarantined:
            raise AssertionError(
                f"{self.table}: rows_in {self.rows_in} != kept {len(self.kept)} + quarantined {self.rows_quarantined}"
            )


def is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA


def decode_text(value: Any) -> tuple[str | None, str | None, str]:
    """Return (text, rule, detail): text when valid, else the rule it breaks."""
    if is_missing(value):
        return None, "null_field", "text is null/NaN"
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as err:
            return None, "invalid_utf8", f"bytes are not UTF-8 ({err.reason} at byte {err.start})"
    if not isinstance(value, str):
        return None, "wrong_type", f"text is {type(value).__name__}, expected str"
    bad = next((i for i, ch in enumerate(value) if "\ud800" <= ch <= "\udfff"), None)
    if bad is not None:
        return None, "invalid_utf8", f"lone surrogate at char {bad} (undecodable bytes)"
    if not value.strip():
        return None, "empty_text", "text is empty or whitespace"
    return value, None, ""


def screen_documents(
    rows: Iterable[Mapping[str, Any]],
    ledger: QuarantineLedger,
    *,
    table: str,
    min_chars: int,
    max_chars: int,
    on_bad_rows: OnBadRows = "quarantine",
    seen_ids: set[str] | None = None,
) -> IntakeResult:
    """Apply the intake rules to raw ``{doc_id, source, text[, origin]}`` rows; return the clean rows as a frame.

    Rules, in order: null_field / wrong_type (id and text), invalid_utf8, empty_text, duplicate_id
    (the first occurrence is kept; pass the same ``seen_ids`` set to screen several sources as one
    table), oversize, too_short.
    """
    if on_bad_rows == "raise":
        ledger = _RaisingLedger()
    kept: list[dict[str, Any]] = []
    seen_ids = set() if seen_ids is None else seen_ids
    before = Counter(ledger.counts(table))
    rows_in = 0
    for position, row in enumerate(rows):
        rows_in += 1
        doc_id = row.get("doc_id")
        # A row without a usable id is named by where it came from (file:line), else its position.
        where = row.get("origin") or f"#{position}"
        if is_missing(doc_id):
            ledger.add(table, where, "null_field", "doc_id is null/NaN", row.get("text", ""))
            continue
        if not isinstance(doc_id, str) or not doc_id:
            ledger.add(
                table, where, "wrong_type", f"doc_id is {type(doc_id).__name__} {doc_id!r}, expected str", doc_id
            )
            continue
        source = row.get("source", "unknown")
        if not isinstance(source, str) or is_missing(source):
            ledger.add(table, doc_id, "wrong_type", "source must be a string", source)
            continue
        text, rule, detail = decode_text(row.get("text"))
        if rule is not None:
            ledger.add(table, doc_id, rule, detail, row.get("text", ""))
            continue
        assert text is not None
        if doc_id in seen_ids:
            ledger.add(table, doc_id, "duplicate_id", "doc_id seen before (first occurrence kept)", text)
            continue
        seen_ids.add(doc_id)
        if len(text) > max_chars:
            ledger.add(table, doc_id, "oversize", f"{len(text)} chars > max {max_chars}", text)
            continue
        if len(text) < min_chars:
            ledger.add(table, doc_id, "too_short", f"{len(text)} chars < min {min_chars}", text)
            continue
        kept.append({"doc_id": doc_id, "source": source, "text": text})
    frame = pd.DataFrame(kept, columns=["doc_id", "source", "text"])
    result = IntakeResult(table, rows_in, frame, dict(Counter(ledger.counts(table)) - before))
    result.check_balance()
    return result


def drop_and_quarantine(
    frame: pd.DataFrame,
    drop_mask: pd.Series,
    ledger: QuarantineLedger,
    *,
    table: str,
    id_col: str,
    text_col: str,
    rule: str,
    details: pd.Series | str,
) -> pd.DataFrame:
    """Move the rows where ``drop_mask`` holds from ``frame`` into the ledger under ``rule``."""
    for idx in frame.index[drop_mask.to_numpy()]:
        detail = details if isinstance(details, str) else str(details.loc[idx])
        ledger.add(table, frame.at[idx, id_col], rule, detail, frame.at[idx, text_col])
    return frame.loc[~drop_mask.to_numpy()].reset_index(drop=True)
