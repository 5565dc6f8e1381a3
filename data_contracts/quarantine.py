"""Row-level intake rules and the quarantine ledger.

Bad input never disappears: every input row that an intake rule rejects is either raised as a
``ContractViolation`` naming the row and the rule (``on_bad_rows="raise"``) or written to the ledger
(``"quarantine"``), and ``rows_in == rows_kept + rows_quarantined`` holds per table
(``IntakeResult.check_balance``). Filters that are part of normal curation (duplicates, eval overlap
of generated data) always quarantine: finding them is the point, not an error.

Whatever a row holds, screening it never raises anything but ``ContractViolation``, and the ledger only
stores strings that UTF-8 (hence parquet) can encode: lone surrogates are written escaped (``\\udcc3``).
"""

from __future__ import annotations

import math
import re
import reprlib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import pandas as pd

from data_contracts.schemas import QUARANTINE_RULES, QuarantineRow

OnBadRows = Literal["quarantine", "raise"]
EXCERPT_CHARS = 120
DOCUMENT_FIELDS = ("doc_id", "source", "text")

# Unicode category Cc minus tab, LF, CR: see ``control_problem``.
_DISALLOWED_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
# A lone surrogate is what undecodable bytes become under errors="surrogateescape", or what a JSON "\udcc3"
# escape decodes to; it is not a Unicode scalar value, so UTF-8 (and parquet) cannot encode it.
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _bounded_repr() -> reprlib.Repr:
    """A repr for non-string excerpts that stops early: a huge or deeply nested value must not blow up the ledger."""
    bounded = reprlib.Repr()
    bounded.maxlevel = 3
    bounded.maxstring = bounded.maxother = bounded.maxlong = EXCERPT_CHARS
    return bounded


_REPR = _bounded_repr()

Problem = tuple[str, str]  # (rule, detail)


class ContractViolation(ValueError):
    """A row broke a contract rule and the caller asked for errors instead of quarantine."""

    def __init__(self, table: str, row_id: str, rule: str, detail: str):
        self.table, self.row_id, self.rule, self.detail = table, row_id, rule, detail
        super().__init__(f"{table}: row {row_id!r} breaks rule {rule!r}: {detail}")


def _escaped(text: str) -> str:
    """``text`` with lone surrogates escaped: parquet cannot store them, and a reviewer wants to see them."""
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def _excerpt(value: Any) -> str:
    if isinstance(value, bytes):
        # Four bytes at most per character: enough for the excerpt without decoding a whole huge line.
        text = value[: 4 * EXCERPT_CHARS].decode("utf-8", errors="backslashreplace")
    elif isinstance(value, str):
        text = value[:EXCERPT_CHARS]
    else:
        text = _REPR.repr(value)
    return _escaped(text)[:EXCERPT_CHARS]


@dataclass
class QuarantineLedger:
    """Collects rejected rows across tables; ``frame()`` is the versioned quarantine file's content."""

    _rows: list[dict[str, str]] = field(default_factory=list)

    def add(self, table: str, row_id: Any, rule: str, detail: str, value: Any = "") -> None:
        if rule not in QUARANTINE_RULES:
            raise ValueError(f"unknown quarantine rule {rule!r}")
        row_id = _excerpt(row_id) if row_id is not None and not is_missing(row_id) else "<missing>"
        self._rows.append(
            {"row_id": row_id, "table": table, "rule": rule, "detail": _escaped(detail), "excerpt": _excerpt(value)}
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
        raise ContractViolation(table, _excerpt(row_id), rule, _escaped(detail))


@dataclass(frozen=True)
class RawRow:
    """A row read from a user's file: its fields as found, and where it came from (``file:line7``)."""

    origin: str
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class UnreadableRow:
    """A line of a user's file that could not be parsed into fields, with the rule that says why."""

    origin: str
    rule: str
    detail: str
    raw: Any


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


def surrogate_problem(name: str, text: str) -> Problem | None:
    if (found := _SURROGATE.search(text)) is None:
        return None
    return (
        "invalid_utf8",
        f"{name} has lone surrogate U+{ord(found.group()):04X} at char {found.start()} (not encodable as UTF-8)",
    )


def control_problem(name: str, text: str) -> Problem | None:
    """``control_characters`` if ``text`` holds a control character other than tab, LF, CR.

    Of the control characters (Unicode category Cc) a document may hold tab, line feed and carriage return,
    the whitespace of ordinary prose and source code. Every other one is quarantined: the rest of C0 (NUL,
    BEL, ESC, vertical tab, form feed, ...), DEL and C1 (U+0080-U+009F). They carry no content for a
    language model; NUL and ESC are the trace of binary or terminal output pasted into text, C1 characters
    the usual trace of mojibake (cp1252 bytes decoded as Latin-1). The stdlib sources we feed ourselves
    hold none. Format characters (category Cf: zero-width joiner, BOM, bidi marks) are not controls here:
    emoji sequences and right-to-left text need them.
    """
    if (found := _DISALLOWED_CONTROL.search(text)) is None:
        return None
    return "control_characters", f"{name} has control character U+{ord(found.group()):04X} at char {found.start()}"


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
    if (problem := surrogate_problem("text", value)) is not None:
        return None, *problem
    if not value.strip():
        return None, "empty_text", "text is empty or whitespace"
    return value, None, ""


def _label_problem(name: str, value: Any) -> Problem | None:
    """The rule a ``doc_id`` or ``source`` value breaks: it must be a non-empty, encodable string."""
    if is_missing(value):
        return "null_field", f"{name} is null/NaN"
    if not isinstance(value, str):
        return "wrong_type", f"{name} is {type(value).__name__}, expected str"
    if not value:
        return "wrong_type", f"{name} is an empty string"
    return surrogate_problem(name, value) or control_problem(name, value)


def _unknown_field(fields: Mapping[Any, Any]) -> tuple[str, Any] | None:
    """(detail, value) naming the first field outside doc_id/source/text: a field we do not know would
    otherwise be dropped without anyone noticing."""
    unknown = [key for key in fields if key not in DOCUMENT_FIELDS]
    if not unknown:
        return None
    more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
    detail = f"unknown field {_excerpt(unknown[0])!r}{more}; expected only {', '.join(DOCUMENT_FIELDS)}"
    return detail, fields[unknown[0]]


@dataclass(frozen=True)
class Rejected:
    row_id: Any
    rule: str
    detail: str
    value: Any


IntakeRow = Mapping[str, Any] | RawRow | UnreadableRow


def well_formed(row: IntakeRow, position: int) -> dict[str, str] | Rejected:
    """The row's doc_id/source/text when every field is well-formed, else the first rule it breaks."""
    if isinstance(row, UnreadableRow):
        return Rejected(row.origin, row.rule, row.detail, row.raw)
    fields, where = (row.fields, row.origin) if isinstance(row, RawRow) else (row, f"#{position}")
    doc_id = fields.get("doc_id")
    if (problem := _label_problem("doc_id", doc_id)) is not None:
        # A row without a usable id is named by where it came from (file:line), else its position.
        return Rejected(where, *problem, fields.get("text", "") if is_missing(doc_id) else doc_id)
    source = fields.get("source", "unknown")
    if (problem := _label_problem("source", source)) is not None:
        return Rejected(doc_id, *problem, source)
    if (unknown := _unknown_field(fields)) is not None:
        return Rejected(doc_id, "unknown_field", *unknown)
    text, rule, detail = decode_text(fields.get("text"))
    if rule is not None:
        return Rejected(doc_id, rule, detail, fields.get("text", ""))
    assert text is not None
    if (problem := control_problem("text", text)) is not None:
        return Rejected(doc_id, *problem, text)
    return {"doc_id": doc_id, "source": source, "text": text}


def screen_documents(
    rows: Iterable[IntakeRow],
    ledger: QuarantineLedger,
    *,
    table: str,
    min_chars: int,
    max_chars: int,
    on_bad_rows: OnBadRows = "quarantine",
    seen_ids: set[str] | None = None,
) -> IntakeResult:
    """Apply the intake rules to raw rows; return the clean rows as a frame.

    A row is a ``{doc_id, source, text}`` mapping (our own sources), a ``RawRow`` (a user's file, named by
    its origin when it has no usable id) or an ``UnreadableRow`` (a line the reader could not parse:
    ``invalid_utf8``, ``invalid_json``, ``json_too_deep``, ``number_too_large``, ``wrong_type``).

    Rules, in order: doc_id and source are non-empty strings (null_field / wrong_type) that UTF-8 can
    encode (invalid_utf8) without control characters (control_characters); no field but doc_id, source,
    text (unknown_field; a missing source is "unknown"); text is a string or UTF-8 bytes (null_field /
    wrong_type / invalid_utf8), not blank (empty_text), without control characters other than tab, LF,
    CR (control_characters); duplicate_id (the first kept occurrence wins; pass the same ``seen_ids`` set
    to screen several sources as one table); oversize; too_short.
    """
    if on_bad_rows == "raise":
        ledger = _RaisingLedger()
    kept: list[dict[str, Any]] = []
    seen_ids = set() if seen_ids is None else seen_ids
    before = Counter(ledger.counts(table))
    rows_in = 0
    for position, row in enumerate(rows):
        rows_in += 1
        doc = well_formed(row, position)
        if isinstance(doc, Rejected):
            ledger.add(table, doc.row_id, doc.rule, doc.detail, doc.value)
            continue
        doc_id, text = doc["doc_id"], doc["text"]
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
        kept.append(doc)
    frame = pd.DataFrame(kept, columns=list(DOCUMENT_FIELDS))
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
