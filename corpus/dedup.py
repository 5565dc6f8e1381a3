"""Exact and near-duplicate detection.

Exact: SHA-1 of whitespace-normalised text. Near: MinHash signatures over character shingles with
LSH banding; a candidate pair from a shared band is confirmed by its estimated Jaccard similarity, and
the later document (in input order) of each confirmed pair is marked. Hashes are crc32/sha-based, never
Python's salted ``hash``, so results are identical across processes.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

_MERSENNE = np.uint64((1 << 61) - 1)


def normalise(text: str) -> str:
    return " ".join(text.split())


def exact_key(text: str) -> bytes:
    """SHA-1 of the whitespace-normalised text: equal keys are exact duplicates."""
    return hashlib.sha1(normalise(text).encode("utf-8")).digest()


def exact_duplicates(texts: Sequence[str]) -> list[int | None]:
    """For each text, the index of its first exact (whitespace-normalised) duplicate, else None."""
    return exact_duplicates_of_keys([exact_key(text) for text in texts])


def exact_duplicates_of_keys(keys: Sequence[bytes]) -> list[int | None]:
    """:func:`exact_duplicates` from precomputed :func:`exact_key` values (computed per shard by a map)."""
    first: dict[bytes, int] = {}
    out: list[int | None] = []
    for i, key in enumerate(keys):
        out.append(first.get(key))
        first.setdefault(key, i)
    return out


def _shingle_hashes(text: str, k: int) -> np.ndarray:
    data = normalise(text).encode("utf-8")
    if len(data) <= k:
        return np.array([zlib.crc32(data)], dtype=np.uint64)
    return np.unique(np.fromiter((zlib.crc32(data[i : i + k]) for i in range(len(data) - k + 1)), dtype=np.uint64))


def minhash_signatures(texts: Sequence[str], *, shingle: int, permutations: int, seed: int) -> np.ndarray:
    """[N, P] uint64 MinHash signatures with universal hashes (a·x + b) mod (2^61 − 1)."""
    rng = np.random.default_rng(seed)
    # a, b and the crc32 shingle hashes are below 2^32, so a·h fits in uint64 without overflow.
    a = rng.integers(1, 1 << 32, size=permutations, dtype=np.uint64)
    b = rng.integers(0, 1 << 32, size=permutations, dtype=np.uint64)
    sigs = np.empty((len(texts), permutations), dtype=np.uint64)
    for i, text in enumerate(texts):
        h = _shingle_hashes(text, shingle)  # [S]
        sigs[i] = ((h[:, None] * a[None, :] % _MERSENNE + b[None, :]) % _MERSENNE).min(axis=0)  # [P]
    return sigs


def near_duplicates(
    texts: Sequence[str], *, shingle: int, permutations: int, bands: int, threshold: float, seed: int
) -> list[tuple[int, float] | None]:
    """For each text, ``(index of an earlier near-duplicate, estimated Jaccard)`` or None."""
    if not texts:
        return []
    sigs = minhash_signatures(texts, shingle=shingle, permutations=permutations, seed=seed)
    return near_duplicates_of_signatures(sigs, bands=bands, threshold=threshold)


def near_duplicates_of_signatures(sigs: np.ndarray, *, bands: int, threshold: float) -> list[tuple[int, float] | None]:
    """:func:`near_duplicates` from precomputed [N, P] signatures (a document's signature depends on its text
    and the seed alone, so a map computes them per shard; the banding needs every document, in order)."""
    rows = sigs.shape[1] // bands
    out: list[tuple[int, float] | None] = [None] * len(sigs)
    buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
    for i in range(len(sigs)):
        best: tuple[int, float] | None = None
        candidates: set[int] = set()
        for band in range(bands):
            key = (band, sigs[i, band * rows : (band + 1) * rows].tobytes())
            candidates.update(buckets[key])
            buckets[key].append(i)
        for j in sorted(candidates):
            if out[j] is not None:
                continue
            jaccard = float(np.mean(sigs[i] == sigs[j]))
            if jaccard >= threshold and (best is None or jaccard > best[1]):
                best = (j, jaccard)
        out[i] = best
    return out
