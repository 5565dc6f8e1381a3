"""Admission control for asynchronous rollouts: how many new rollouts may start now (AReaL, METHODS §7.3).

    capacity = min( max_concurrent - running,
                    (η + version + 1) · batch_size - (accepted + running) )      (never below 0)

``version`` is the trainer's current policy version (the number of updates so far), ``batch_size`` the
number of rollouts one update consumes, and η (``max_staleness``) how many versions generation may run
ahead of training. ``running`` counts admitted rollouts not yet finished, ``accepted`` finished rollouts
kept for training (consumed or still waiting), ``rejected`` finished rollouts thrown away: they free their
slot and do not count against the budget.

The second term caps every rollout ever admitted by the end of version v at (η + v + 1) batches, so a
rollout admitted at version v is consumed by an update at version v + η at the latest when batches are
taken in admission order. η = 0 is synchronous RL: the next batch starts only after the trainer has taken
the current one and moved to the next version. The first term bounds the work in flight (memory, KV cache).

A "rollout" is whatever unit the caller admits and consumes together; the scheduler admits prompt groups
(the G samples of one prompt), because group-normalised advantages need the whole group.

Thread-safe: every method takes one lock, and ``try_admit`` checks and reserves in one step, so concurrent
workers can never admit past the capacity between reading it and acting on it.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class StalenessCounts:
    version: int = 0
    running: int = 0
    accepted: int = 0
    rejected: int = 0


class StalenessManager:
    def __init__(
        self, *, max_staleness: int, batch_size: int, max_concurrent: int, counts: StalenessCounts | None = None
    ):
        if max_staleness < 0 or batch_size < 1 or max_concurrent < 1:
            raise ValueError(
                f"need max_staleness >= 0, batch_size >= 1, max_concurrent >= 1; "
                f"got {max_staleness}, {batch_size}, {max_concurrent}"
            )
        self.max_staleness = max_staleness
        self.batch_size = batch_size
        self.max_concurrent = max_concurrent
        self._lock = threading.Lock()
        self._counts = counts or StalenessCounts()

    def _capacity(self) -> int:
        c = self._counts
        in_flight_room = self.max_concurrent - c.running
        staleness_room = (self.max_staleness + c.version + 1) * self.batch_size - (c.accepted + c.running)
        return max(0, min(in_flight_room, staleness_room))

    def capacity(self) -> int:
        with self._lock:
            return self._capacity()

    def try_admit(self) -> bool:
        """Reserve one slot if the capacity allows it (then ``running`` += 1); False otherwise."""
        with self._lock:
            if self._capacity() <= 0:
                return False
            self._update(running=+1)
            return True

    def on_accepted(self) -> None:
        """A running rollout finished and is kept for training."""
        with self._lock:
            self._require_running("accept")
            self._update(running=-1, accepted=+1)

    def on_rejected(self) -> None:
        """A running rollout finished and is thrown away: its slot is free again."""
        with self._lock:
            self._require_running("reject")
            self._update(running=-1, rejected=+1)

    def set_version(self, version: int) -> None:
        """The trainer moved to ``version``; versions never go back."""
        with self._lock:
            if version < self._counts.version:
                raise ValueError(f"policy version went back from {self._counts.version} to {version}")
            self._counts = StalenessCounts(**{**asdict(self._counts), "version": version})

    @property
    def counts(self) -> StalenessCounts:
        with self._lock:
            return self._counts

    def _require_running(self, what: str) -> None:
        if self._counts.running <= 0:
            raise RuntimeError(f"cannot {what} a rollout: none is running")

    def _update(self, **delta: int) -> None:
        now = asdict(self._counts)
        self._counts = StalenessCounts(**{key: now[key] + delta.get(key, 0) for key in now})
