"""Deterministic, resumable language-model batches cut from a flat token array.

The curation stage writes shards as flat little-endian uint16 arrays (``tasks/curate/shards.py``), so
any sequence length can be cut from the same tokens. Window ``i`` is ``tokens[i*T : i*T + T + 1]``
(inputs and shifted targets share it; neighbouring windows overlap by one token). Each epoch visits
every window once, in the order of a permutation seeded by ``(seed, epoch)``. A *global* batch is the
next ``B * world_size`` windows of that order; rank ``r`` takes windows ``[r*B, (r+1)*B)`` of it, so the
ranks' slices are disjoint and together equal one process's batch of ``B * world_size``. A global
batch never straddles epochs: the last ``n_windows % (B * world_size)`` windows of an epoch's order
are skipped.

The position (epoch, cursor in global batches) is the whole state: ``load_state_dict`` on a fresh
object continues with exactly the batch that would have come next — also under another world size, as
long as the global batch ``B * world_size`` is the same.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


class TokenBatches:
    """Infinite iterator of ``[micro_batch_size, seq_len + 1]`` int64 windows for this rank."""

    def __init__(
        self,
        tokens: np.ndarray,
        seq_len: int,
        micro_batch_size: int,
        seed: int,
        *,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if tokens.ndim != 1:
            raise ValueError(f"tokens must be a flat array, got shape {tokens.shape}")
        if min(seq_len, micro_batch_size, world_size) < 1 or not 0 <= rank < world_size:
            raise ValueError(
                f"bad sizes: seq_len={seq_len} micro_batch_size={micro_batch_size} rank={rank}/{world_size}"
            )
        self.tokens = tokens
        self.seq_len = seq_len
        self.micro_batch_size = micro_batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.n_windows = max(len(tokens) - 1, 0) // seq_len
        self.global_batch = micro_batch_size * world_size
        self.batches_per_epoch = self.n_windows // self.global_batch
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{len(tokens)} tokens make {self.n_windows} windows of {seq_len}+1, fewer than one global "
                f"batch of {self.global_batch} (micro_batch_size {micro_batch_size} x world_size {world_size})"
            )
        self.epoch = 0
        self.cursor = 0
        self._order: np.ndarray | None = None
        self._offsets = np.arange(seq_len + 1, dtype=np.int64)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """[n_windows] the window indices in the order epoch ``epoch`` visits them."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.n_windows)

    def __iter__(self) -> TokenBatches:
        return self

    def __next__(self) -> torch.Tensor:
        if self.cursor == self.batches_per_epoch:
            self.epoch, self.cursor, self._order = self.epoch + 1, 0, None
        if self._order is None:
            self._order = self.epoch_order(self.epoch)
        first = self.cursor * self.global_batch + self.rank * self.micro_batch_size
        windows = self._order[first : first + self.micro_batch_size]
        index = windows[:, None] * self.seq_len + self._offsets  # [B, T+1]
        self.cursor += 1
        return torch.from_numpy(self.tokens[index].astype(np.int64))

    def state_dict(self) -> dict[str, Any]:
        # The identity fields let a resume refuse data that would give a different sequence.
        return {
            "epoch": self.epoch,
            "cursor": self.cursor,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "global_batch": self.global_batch,
            "n_tokens": len(self.tokens),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        mine = self.state_dict()
        for key in ("seed", "seq_len", "global_batch", "n_tokens"):
            if state[key] != mine[key]:
                raise ValueError(f"data state was saved with {key}={state[key]}, these batches have {mine[key]}")
        if not 0 <= state["cursor"] <= self.batches_per_epoch:
            raise ValueError(f"data cursor {state['cursor']} outside an epoch of {self.batches_per_epoch} batches")
        self.epoch, self.cursor, self._order = state["epoch"], state["cursor"], None
