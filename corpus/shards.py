"""Token shards: documents tokenised, joined with EOS, written as flat little-endian uint16 files.

``index.json`` lists each shard with its split, token count and sha256; readers verify the digest.
A flat array (not padded sequences) lets the trainer cut any sequence length from the same shards.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lineage.manifest import sha256_file

TOKEN_DTYPE = np.dtype("<u2")


def tokenize_documents(tokenizer, texts: Sequence[str], eos_id: int) -> np.ndarray:
    """[N_tokens] uint16: each document's ids followed by EOS, in the given order."""
    return join_documents(document_tokens(tokenizer, texts, eos_id))


def document_tokens(tokenizer, texts: Sequence[str], eos_id: int) -> list[np.ndarray]:
    """One uint16 array per document: its ids followed by EOS. A document's ids depend on its text alone."""
    if tokenizer.get_vocab_size() > np.iinfo(TOKEN_DTYPE).max:
        raise ValueError(f"vocab of {tokenizer.get_vocab_size()} does not fit uint16 shards")
    encodings = tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [np.asarray([*enc.ids, eos_id], dtype=TOKEN_DTYPE) for enc in encodings]


def join_documents(pieces: Sequence[np.ndarray]) -> np.ndarray:
    """[N_tokens] uint16: the documents' arrays back to back."""
    return np.concatenate(pieces) if len(pieces) else np.zeros(0, dtype=TOKEN_DTYPE)


def write_shards(tokens: np.ndarray, out_dir: Path, *, split: str, shard_tokens: int) -> list[dict]:
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, start in enumerate(range(0, max(len(tokens), 1), shard_tokens)):
        chunk = tokens[start : start + shard_tokens]
        if len(chunk) == 0:
            break
        path = out_dir / f"{split}-{i:05d}.bin"
        chunk.astype(TOKEN_DTYPE).tofile(path)
        entries.append({"file": path.name, "split": split, "n_tokens": len(chunk), "sha256": sha256_file(path)})
    return entries


def read_shards(shard_dir: Path, split: str, *, verify: bool = True) -> np.ndarray:
    """All tokens of ``split`` in shard order; a shard whose sha256 differs from the index is an error."""
    index = pd.read_json(shard_dir / "index.json")
    parts = []
    for row in index[index["split"] == split].itertuples():
        path = shard_dir / row.file
        if verify and sha256_file(path) != row.sha256:
            raise ValueError(f"shard {path} does not match its sha256 in index.json (corrupt or modified)")
        parts.append(np.fromfile(path, dtype=TOKEN_DTYPE))
    if not parts:
        raise ValueError(f"no {split!r} shards in {shard_dir}")
    return np.concatenate(parts)
