"""Sentence units for LPO: which response tokens share one importance ratio (METHODS §5).

The decoded model text is split after ``[.!?;]`` followed by whitespace or the end of the text, and
after every newline; the whitespace that follows a break belongs to the sentence it closes. A token
belongs to the sentence that holds its last character, so a token that straddles a break (``".\\n"``,
``" The"``) goes with the text it finishes. Tokens that decode to whitespace only (or to nothing) join
the unit of the previous model token. A sentence longer than ``max_unit_tokens`` is cut into pieces of
that many tokens, so a code block or a long equation does not become one giant unit.

Environment observations (mask 0) are not actions: they get unit -1, and the model text on either side
of an observation never shares a sentence (the observation ends the sentence before it). Unit ids are
numbered 0, 1, 2, ... in order over the model tokens of a row.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

OBSERVATION_UNIT = -1
_BREAK = re.compile(r"[.!?;](?:\s+|$)|\n\s*")


def _sentence_of_chars(text: str) -> list[int]:
    """Sentence index of every character of ``text`` (0-based within the text)."""
    owner = [0] * len(text)
    start, index = 0, 0
    for match in _BREAK.finditer(text):
        owner[start : match.end()] = [index] * (match.end() - start)
        start, index = match.end(), index + 1
    owner[start:] = [index] * (len(text) - start)
    return owner


def sentence_unit_ids(token_texts: Sequence[str], mask: Sequence[int], max_unit_tokens: int = 64) -> list[int]:
    """Unit id of every response token: sentence units for model tokens, -1 for observation tokens."""
    if len(token_texts) != len(mask):
        raise ValueError(f"{len(token_texts)} token texts but {len(mask)} mask entries")
    if max_unit_tokens < 1:
        raise ValueError(f"max_unit_tokens must be >= 1, got {max_unit_tokens}")
    # Sentence keys (run, sentence-in-run); a run is a stretch of model tokens between observations.
    keys: list[tuple[int, int] | None] = [None] * len(token_texts)
    run_start = 0
    for run_end in range(len(token_texts) + 1):
        if run_end < len(token_texts) and mask[run_end]:
            continue
        positions = range(run_start, run_end)
        text = "".join(token_texts[p] for p in positions)
        owner = _sentence_of_chars(text)
        cursor = 0
        for p in positions:
            cursor += len(token_texts[p])
            if token_texts[p].strip():
                keys[p] = (run_start, owner[cursor - 1])
        run_start = run_end + 1

    # Whitespace-only tokens take the sentence of the previous model token; leading ones, the first sentence.
    previous_key = next((key for key in keys if key is not None), None)
    units = [OBSERVATION_UNIT] * len(token_texts)
    unit, size = -1, 0
    for p, key in enumerate(keys):
        if not mask[p]:
            continue
        key = previous_key if key is None else key
        if unit < 0 or key != previous_key or size == max_unit_tokens:
            unit, size = unit + 1, 0
        units[p], size, previous_key = unit, size + 1, key
    return units


def batch_sentence_unit_ids(
    tokenizer,
    rows_ids: Sequence[Sequence[int]],
    rows_mask: Sequence[Sequence[int]],
    *,
    max_unit_tokens: int = 64,
    seq_len: int | None = None,
) -> torch.Tensor:
    """Unit ids [B, T] for rows of response ids, padded with -1 to ``seq_len`` (default: longest row).

    ``tokenizer`` is a ``tokenizers.Tokenizer``; each id is decoded on its own (byte-level pieces of a
    multi-byte character decode to a replacement character, which is never a break).
    """
    if len(rows_ids) != len(rows_mask):
        raise ValueError(f"{len(rows_ids)} rows of ids but {len(rows_mask)} rows of masks")
    width = max((len(ids) for ids in rows_ids), default=0) if seq_len is None else seq_len
    units_BT = torch.full((len(rows_ids), width), OBSERVATION_UNIT, dtype=torch.long)
    pieces: dict[int, str] = {}
    for b, (ids, mask) in enumerate(zip(rows_ids, rows_mask, strict=True)):
        if len(ids) > width:
            raise ValueError(f"row {b} has {len(ids)} tokens, more than seq_len={width}")
        for token_id in ids:
            if token_id not in pieces:
                pieces[token_id] = tokenizer.decode([token_id], skip_special_tokens=False)
        units = sentence_unit_ids([pieces[i] for i in ids], mask, max_unit_tokens)
        units_BT[b, : len(units)] = torch.tensor(units, dtype=torch.long)
    return units_BT
