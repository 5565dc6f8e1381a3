"""The per-document half of curation: what one shard of documents needs from nobody else.

Curation's decisions are global (the first of two duplicates wins, in the order documents arrived; an
id is taken by its first well-formed row), but what they are made from is per document: whether a row is
well-formed, the exact-duplicate key, the MinHash signature, the first eval n-gram a free-text document
shares, and later its token ids. Those are computed here, shard by shard, by pure functions, so a Flyte
``map_task`` can spread them over nodes; ``corpus.curation`` makes the decisions from them in the original
order and writes the same bytes as when everything ran in one loop.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from corpus import dedup
from corpus.decontaminate import EvalIndex
from corpus.shards import document_tokens

# Intake's per-row checks live in data_contracts; a row's well-formedness depends on the row alone, the
# rules after it (duplicate_id, size) are the reduce side's, replayed through ``screen_documents``.
from data_contracts.quarantine import IntakeRow, Rejected, UnreadableRow, well_formed

DOCS_PER_SHARD = 1000


@dataclass(frozen=True)
class IntakeItem:
    """One raw row and where it stands in curation's input: which intake call (0: our sources, 1: the user's
    file) and its position there (a row without a usable id is named by it)."""

    intake: int
    position: int
    row: IntakeRow


@dataclass(frozen=True)
class DocRecord:
    """What the map learned about one raw row: the rule it broke, or the clean document and its features."""

    intake: int
    rejected: Rejected | None
    doc: dict[str, str] | None  # doc_id, source, text
    exact_key: bytes
    signature: np.ndarray | None  # [P] uint64 MinHash
    shared_ngram: tuple[str, ...] | None  # first eval content n-gram of a free-text document

    def intake_row(self) -> IntakeRow:
        """The row as intake sees it on the reduce side: a rejection replays under its own rule and detail
        (``UnreadableRow`` carries both verbatim into the ledger); a clean document passes again."""
        if self.rejected is not None:
            r = self.rejected
            return UnreadableRow(origin=r.row_id, rule=r.rule, detail=r.detail, raw=r.value)
        assert self.doc is not None
        return self.doc


def analyse_rows(
    items: Sequence[IntakeItem], *, index: EvalIndex, shingle: int, permutations: int, seed: int
) -> list[DocRecord]:
    """The map function of the first pass: one record per row, in the given order. A row's record depends on
    the row alone, never on the rest of its shard, so any cut into shards gives the same records."""
    verdicts = [well_formed(item.row, item.position) for item in items]
    texts = [v["text"] for v in verdicts if not isinstance(v, Rejected)]
    signatures = iter(dedup.minhash_signatures(texts, shingle=shingle, permutations=permutations, seed=seed))
    records = []
    for item, verdict in zip(items, verdicts, strict=True):
        if isinstance(verdict, Rejected):
            records.append(DocRecord(item.intake, verdict, None, b"", None, None))
            continue
        text = verdict["text"]
        # Environment text is decontaminated where it is generated (see corpus.curation._filter_documents).
        shared = None if verdict["source"].startswith("env-") else index.shared_ngram(text)
        records.append(DocRecord(item.intake, None, verdict, dedup.exact_key(text), next(signatures), shared))
    return records


def tokenize_texts(tokenizer: Any, texts: Sequence[str], eos_id: int) -> list[np.ndarray]:
    """The map function of the second pass: each document's ids followed by EOS (uint16)."""
    return document_tokens(tokenizer, texts, eos_id)


def chunks(n: int, size: int) -> list[range]:
    """``range(n)`` cut into consecutive pieces of ``size``; at least one piece, so a map always has work."""
    return [range(start, min(start + size, n)) for start in range(0, n, size)] or [range(0)]


def dump(obj: Any, path: Path) -> Path:
    """Pickle between the phases of one curation: the intermediate files are written and read by the same
    code version (the Flyte cache key includes it), never kept as a format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        pickle.dump(obj, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return path


def load(path: Path) -> Any:
    with Path(path).open("rb") as fh:
        return pickle.load(fh)
