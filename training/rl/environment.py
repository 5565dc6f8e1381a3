"""Environment calls as futures, so a row waiting on a tool or a verifier never blocks the generation of
other rows; one contract for every task family.

The contract is ``environments.base.Environment``'s: ``observe(task, transcript) -> str | None`` answers
the tool call a transcript ends with, ``verify(task, response) -> Verdict`` checks a finished response.
Every family (math, code, search, tool_use, workflow) and any stand-in that has these two methods runs
behind the same ``EnvironmentPool``; the scheduler never asks which family a row is.

``latency(family, kind, rng) -> seconds`` is slept in the pool's thread before the call: zero by default,
a heavy-tailed draw (``lognormal_latency``) to model sandboxes, search backends and tool servers.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal, Protocol

from environments import Verdict
from training.rl.records import RolloutRecord

CallKind = Literal["observe", "verify"]
Latency = Callable[[str, CallKind, random.Random], float]
RewardFn = Callable[[Sequence[RolloutRecord], Sequence[Verdict]], Sequence[float]]


class Verifier(Protocol):
    def observe(self, task: Any, transcript: str) -> str | None: ...

    def verify(self, task: Any, response: str) -> Verdict: ...


def no_latency(family: str, kind: CallKind, rng: random.Random) -> float:
    return 0.0


def lognormal_latency(median_s: float, sigma: float, *, scale: Mapping[str, float] | None = None) -> Latency:
    """Seconds ~ median · exp(σ·N(0, 1)) (mean = median · exp(σ²/2)); ``scale`` multiplies per family."""
    if median_s < 0 or sigma < 0:
        raise ValueError(f"need median_s >= 0 and sigma >= 0, got {median_s}, {sigma}")

    def draw(family: str, kind: CallKind, rng: random.Random) -> float:
        return (scale or {}).get(family, 1.0) * median_s * math.exp(sigma * rng.gauss(0.0, 1.0))

    return draw


def correctness_reward(records: Sequence[RolloutRecord], verdicts: Sequence[Verdict]) -> list[float]:
    return [1.0 if v.correct else 0.0 for v in verdicts]


class EnvironmentPool:
    """``envs`` by family name; calls run on a thread pool of ``max_workers`` threads."""

    def __init__(
        self, envs: Mapping[str, Verifier], *, max_workers: int = 32, latency: Latency = no_latency, seed: int = 0
    ):
        self.envs = dict(envs)
        self.latency = latency
        self._rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="env")

    def _env(self, family: str) -> Verifier:
        if family not in self.envs:
            raise KeyError(f"no environment for family {family!r} (have: {sorted(self.envs)})")
        return self.envs[family]

    def _delayed(self, family: str, kind: CallKind, call: Callable[[], Any]) -> Any:
        with self._rng_lock:
            seconds = self.latency(family, kind, self._rng)
        time.sleep(seconds)
        return call()

    def observe(self, task: Any, transcript: str) -> Future[str | None]:
        env = self._env(task.family)
        return self._pool.submit(self._delayed, task.family, "observe", lambda: env.observe(task, transcript))

    def verify(self, task: Any, response: str) -> Future[Verdict]:
        env = self._env(task.family)
        return self._pool.submit(self._delayed, task.family, "verify", lambda: env.verify(task, response))

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
