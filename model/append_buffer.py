"""A tensor that grows along one dimension, for decoding caches (keys/values, MLA latents).

Appending with ``torch.cat`` copies the whole cache on every decode step: O(S) bytes per token, O(S²) per
sequence, and at long context a fresh multi-megabyte allocation each step. ``AppendBuffer`` keeps spare
capacity instead (it doubles when full, so each token is copied O(1) times amortised) and hands readers a
view of the filled part.
"""

from __future__ import annotations

import torch


class AppendBuffer:
    """Rows appended along ``dim``; ``tensor`` is the filled part (a view, valid until the next append)."""

    def __init__(self, first: torch.Tensor, dim: int) -> None:
        if dim == 0:
            raise ValueError("dim 0 holds the batch rows (select_rows); grow along another dim")
        self.dim = dim
        self.length = first.shape[dim]
        self._storage = first.contiguous()

    @property
    def tensor(self) -> torch.Tensor:
        return self._storage.narrow(self.dim, 0, self.length)

    @property
    def capacity(self) -> int:
        return self._storage.shape[self.dim]

    def append(self, new: torch.Tensor) -> torch.Tensor:
        """Append ``new`` (same shape except along ``dim``); returns the filled part."""
        needed = self.length + new.shape[self.dim]
        if needed > self.capacity:
            self._grow(max(needed, 2 * self.capacity))
        self._storage.narrow(self.dim, self.length, new.shape[self.dim]).copy_(new)
        self.length = needed
        return self.tensor

    def _grow(self, capacity: int) -> None:
        shape = list(self._storage.shape)
        shape[self.dim] = capacity
        storage = self._storage.new_empty(shape)
        storage.narrow(self.dim, 0, self.length).copy_(self.tensor)
        self._storage = storage

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep batch rows ``rows`` (indices along dim 0), dropping spare capacity's stale contents too."""
        self._storage = self._storage.index_select(0, rows.to(self._storage.device))

    def filled_bytes(self) -> int:
        return self.tensor.numel() * self._storage.element_size()

    def allocated_bytes(self) -> int:
        return self._storage.numel() * self._storage.element_size()
