"""Asynchronous RL: rollout workers generate while the trainer updates (METHODS §7: C3PO++, ASystem, AReaL).

Threads and their jobs:

* rollout workers (``rollout_workers`` threads) admit prompt groups while the ``StalenessManager`` allows
  (η = ``max_staleness``), then advance rows one engine call (``chunk_tokens``) at a time, oldest prompt
  first. Between calls a row can pause, and its next call may run under a newer version: a partial
  rollout, each token tagged with the version that produced it;
* environment calls (tool observations, verification) run as futures on the ``EnvironmentPool``: a row
  waiting on a slow sandbox holds no worker, and the workers generate other rows meanwhile;
* the caller's thread is the trainer: it takes ``batch_groups`` finished groups (oldest first), refuses
  tokens of a version it never pushed, updates, pushes the new weights (``WeightSync``) and moves the
  version on, then checkpoints.

Token budget (C3PO++'s Φ, ``step_token_budget``): once Φ model tokens were generated under the current
version, rows pause at their next call boundary until the next version; if every row is then paused or
finished, the trainer updates on the groups finished so far, even fewer than ``batch_groups``. The budget
yields when nothing at all is finished or waiting, so a step always has something to train on.

η = 0 is synchronous RL: the next batch is admitted only after the update, every row runs under one
version, and since a row's tokens depend only on its seeds and versions (``rows``), the trajectory is the
one of a plain generate-then-train loop (tested: same losses, bit for bit).

Lossless resume: every ``checkpoint_every`` steps the trainer writes one atomic folder (``resume``) with
the trainer's state, the groups in flight (partial rows as far as generated; rows waiting on an
environment call are called again), the finished groups not yet trained, the prompt cursor, the
staleness counts, the version registry and the ledger of prompts trained per step. A run killed at any
moment restarts from its last checkpoint: no prompt lost, none trained twice.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from configs.base import config
from environments import Task, Verdict
from inference.weight_sync import VersionedEngine, WeightSync
from training.rl import resume
from training.rl.environment import EnvironmentPool, RewardFn, correctness_reward
from training.rl.records import RolloutGroup, RolloutRecord
from training.rl.rows import RowParams, apply_chunk, apply_observation, chunk_params
from training.rl.staleness import StalenessCounts, StalenessManager


@config
class SchedulerConfig:
    max_staleness: int = 2
    batch_groups: int = 4
    samples_per_prompt: int = 4
    max_concurrent_groups: int = 64
    step_token_budget: int | None = None
    rollout_workers: int = 2
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    chunk_tokens: int = 16
    max_turns: int = 4
    seed: int = 0
    checkpoint_every: int = 1
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        if self.batch_groups < 1 or self.samples_per_prompt < 1 or self.rollout_workers < 1:
            raise ValueError("batch_groups, samples_per_prompt and rollout_workers must be >= 1")
        if self.step_token_budget is not None and self.step_token_budget < 1:
            raise ValueError(f"step_token_budget must be None or >= 1, got {self.step_token_budget}")
        if self.checkpoint_every < 1 or self.keep_checkpoints < 1:
            raise ValueError("checkpoint_every and keep_checkpoints must be >= 1")

    @property
    def row_params(self) -> RowParams:
        return RowParams(
            temperature=self.temperature,
            top_p=self.top_p,
            max_new_tokens=self.max_new_tokens,
            chunk_tokens=self.chunk_tokens,
            max_turns=self.max_turns,
            seed=self.seed,
        )


class Trainer(Protocol):
    def train_step(self, groups: Sequence[RolloutGroup], *, version: int) -> Mapping[str, float]:
        """One update on ``groups`` (sorted by prompt index); ``version`` is the policy before the update."""

    def policy_state(self) -> Mapping[str, torch.Tensor]:
        """The weights the rollout engine should run."""

    def state(self) -> Any:
        """Everything to resume training (``training.state_io``-serialisable)."""

    def load_state(self, state: Any) -> None: ...


class PromptStream:
    """Prompt i of an endless stream: the tasks in a fresh seeded order every epoch."""

    def __init__(self, tasks: Sequence[Task], seed: int):
        if not tasks:
            raise ValueError("no tasks to draw prompts from")
        self.tasks = list(tasks)
        self.seed = seed
        self._orders: dict[int, list[int]] = {}

    def __getitem__(self, index: int) -> Task:
        epoch, position = divmod(index, len(self.tasks))
        if epoch not in self._orders:
            order = list(range(len(self.tasks)))
            random.Random(f"{self.seed}|{epoch}").shuffle(order)
            self._orders[epoch] = order
        return self.tasks[self._orders[epoch][position]]


class Interrupted(RuntimeError):
    """``stop()`` was called: the run ended early, as after a crash (nothing written after the last checkpoint)."""


class AsyncRLScheduler:
    def __init__(
        self,
        cfg: SchedulerConfig,
        *,
        tasks: Sequence[Task],
        engine: VersionedEngine,
        sync: WeightSync,
        envs: EnvironmentPool,
        trainer: Trainer,
        reward_fn: RewardFn = correctness_reward,
        checkpoint_dir: Path | None = None,
    ):
        self.cfg = cfg
        self.prompts = PromptStream(tasks, cfg.seed)
        self.engine = engine
        self.sync = sync
        self.envs = envs
        self.trainer = trainer
        self.reward_fn = reward_fn
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.params = cfg.row_params
        self.staleness = StalenessManager(
            max_staleness=cfg.max_staleness, batch_size=cfg.batch_groups, max_concurrent=cfg.max_concurrent_groups
        )
        self._cond = threading.Condition(threading.RLock())
        self._workers: list[threading.Thread] = []
        self._stopping = False
        self._error: BaseException | None = None
        self.version = 0
        self.cursor = 0
        self.groups: dict[int, RolloutGroup] = {}
        self.finished: list[RolloutGroup] = []
        self.trained: list[list[int]] = []
        self.history: list[dict[str, float]] = []
        self.resumed_from: int | None = None
        self._ready: list[tuple[int, int]] = []
        self._generating = 0
        self._pending_env = 0
        self._tokens_by_version: Counter[int] = Counter()

    @property
    def step(self) -> int:
        return len(self.trained)

    def run(self, steps: int) -> list[dict[str, float]]:
        """Train until ``steps`` updates in all (counting those before a resume); the per-step metrics."""
        self._start()
        self._workers = [
            threading.Thread(target=self._worker, name=f"rollout-{i}", daemon=True)
            for i in range(self.cfg.rollout_workers)
        ]
        for worker in self._workers:
            worker.start()
        try:
            while self.step < steps:
                self._train_one_step()
                if self.checkpoint_dir is not None and self.step % self.cfg.checkpoint_every == 0:
                    with self._cond:
                        self._raise_if_stopped()
                    self._checkpoint()
        finally:
            self._shutdown_workers()
        return list(self.history)

    def stop(self) -> None:
        """End the run as a crash would: workers and trainer stop, no further checkpoint is written."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()

    def _start(self) -> None:
        latest = resume.latest(self.checkpoint_dir) if self.checkpoint_dir is not None else None
        if latest is None:
            self.sync.push(self.trainer.policy_state(), self.version)
            return
        saved, trainer_state = resume.load(latest)
        self.trainer.load_state(trainer_state)
        self.sync.restore_registry(saved["registry"])
        self.version, self.cursor = saved["version"], saved["cursor"]
        self.trained, self.history = saved["trained"], saved["history"]
        self._tokens_by_version = Counter({int(k): v for k, v in saved["tokens_by_version"].items()})
        self.staleness = StalenessManager(
            max_staleness=self.cfg.max_staleness,
            batch_size=self.cfg.batch_groups,
            max_concurrent=self.cfg.max_concurrent_groups,
            counts=StalenessCounts(**saved["staleness"]),
        )
        self.finished = [RolloutGroup.from_json(g, Task) for g in saved["finished"]]
        self.resumed_from = self.step
        # The engine gets the checkpoint's weights under the checkpoint's version (a re-sync).
        self.sync.push(self.trainer.policy_state(), self.version)
        with self._cond:
            for data in saved["in_flight"]:
                group = RolloutGroup.from_json(data, Task)
                self.groups[group.prompt_index] = group
                for record in group.records:
                    if record.stage != "done":
                        self._route(group, record, record.stage)

    def _train_one_step(self) -> None:
        batch = self._wait_for_batch()
        self.sync.require_known(v for g in batch for r in g.records for v in r.versions)
        stats = dict(self.trainer.train_step(batch, version=self.version))
        self.sync.push(self.trainer.policy_state(), self.version + 1)
        oldest = min(g.oldest_version for g in batch)
        rewards = [r.reward for g in batch for r in g.records]
        model_tokens = sum(r.model_tokens for g in batch for r in g.records)
        with self._cond:
            stats.update(
                step=float(self.step + 1),
                groups=float(len(batch)),
                reward_mean=sum(rewards) / len(rewards),
                model_tokens=float(model_tokens),
                max_staleness=float(self.version - oldest),
                partial_rows=float(sum(len({v for v in r.versions}) > 1 for g in batch for r in g.records)),
            )
            self.history.append(stats)
            self.trained.append([g.prompt_index for g in batch])
            self.version += 1
            self.staleness.set_version(self.version)
            self._cond.notify_all()

    def _wait_for_batch(self) -> list[RolloutGroup]:
        with self._cond:
            while True:
                self._raise_if_stopped()
                if len(self.finished) >= self.cfg.batch_groups or (self.finished and self._budget_exhausted_idle()):
                    break
                self._cond.wait()
            self.finished.sort(key=lambda g: g.prompt_index)
            batch, self.finished = self.finished[: self.cfg.batch_groups], self.finished[self.cfg.batch_groups :]
            return batch

    def _raise_if_stopped(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"a rollout worker or environment call failed: {self._error!r}") from self._error
        if self._stopping:
            raise Interrupted("stopped")

    def _budget_spent(self) -> bool:
        budget = self.cfg.step_token_budget
        return budget is not None and self._tokens_by_version[self.version] >= budget

    def _budget_exhausted_idle(self) -> bool:
        """The budget is spent and every unfinished row is paused: update on what finished."""
        return self._budget_spent() and self._generating == 0 and self._pending_env == 0

    def _paused(self) -> bool:
        # The budget yields when nothing is finished or on its way: the step needs something to train on.
        return self._budget_spent() and bool(self.finished or self._pending_env or self._generating)

    def _admit(self) -> None:
        while self.staleness.try_admit():
            task = self.prompts[self.cursor]
            records = [
                RolloutRecord(
                    prompt_index=self.cursor,
                    sample=s,
                    task_id=task.task_id,
                    family=task.family,
                    prompt_ids=self.engine.encode(task.prompt),
                )
                for s in range(self.cfg.samples_per_prompt)
            ]
            group = RolloutGroup(prompt_index=self.cursor, task=task, records=records, admitted_version=self.version)
            self.groups[self.cursor] = group
            self.cursor += 1
            for record in records:
                self._route(group, record, "generate")

    def _route(self, group: RolloutGroup, record: RolloutRecord, stage: str) -> None:
        """Send a row to what it needs next: a worker, an environment call, or its group's completion."""
        record.stage = stage
        if stage == "generate":
            heapq.heappush(self._ready, (record.prompt_index, record.sample))
        elif stage == "observe":
            self._pending_env += 1
            future = self.envs.observe(group.task, record.text)
            future.add_done_callback(lambda f: self._on_observation(group, record, f))
        elif stage == "verify":
            self._pending_env += 1
            future = self.envs.verify(group.task, record.text)
            future.add_done_callback(lambda f: self._on_verdict(group, record, f))
        self._cond.notify_all()

    def _on_observation(self, group: RolloutGroup, record: RolloutRecord, future) -> None:
        with self._cond:
            self._pending_env -= 1
            if self._record_failure(future):
                return
            self._route(group, record, apply_observation(record, future.result(), self.engine.encode))

    def _on_verdict(self, group: RolloutGroup, record: RolloutRecord, future) -> None:
        with self._cond:
            self._pending_env -= 1
            if self._record_failure(future):
                return
            verdict: Verdict = future.result()
            record.verdict = {
                "correct": verdict.correct,
                "format_ok": verdict.format_ok,
                "extracted": verdict.extracted,
                "reason": verdict.reason,
            }
            record.stage = "done"
            if group.done and group.prompt_index in self.groups:
                rewards = self.reward_fn(group.records, [Verdict(**r.verdict) for r in group.records])
                for r, reward in zip(group.records, rewards, strict=True):
                    r.reward = float(reward)
                del self.groups[group.prompt_index]
                self.finished.append(group)
                self.staleness.on_accepted()
            self._cond.notify_all()

    def _record_failure(self, future) -> bool:
        if future.cancelled() or self._stopping:
            return True
        if future.exception() is not None:
            self._error = self._error or future.exception()
            self._cond.notify_all()
            return True
        return False

    def _next_row(self) -> tuple[RolloutGroup, RolloutRecord] | None:
        if not self._ready or self._paused():
            return None
        prompt_index, sample = heapq.heappop(self._ready)
        group = self.groups[prompt_index]
        return group, group.records[sample]

    def _worker(self) -> None:
        decode = self.engine.decode
        while True:
            with self._cond:
                while True:
                    if self._stopping or self._error is not None:
                        return
                    self._admit()
                    picked = self._next_row()
                    if picked is not None:
                        break
                    self._cond.wait()
                group, record = picked
                self._generating += 1
                context = record.prompt_ids + record.response_ids
                params = chunk_params(record, self.params)
            try:
                version, (gen,) = self.engine.generate([context], params)
            except BaseException as err:
                with self._cond:
                    self._generating -= 1
                    self._error = self._error or err
                    self._cond.notify_all()
                return
            with self._cond:
                self._generating -= 1
                if self._stopping:
                    return
                before = record.model_tokens
                stage = apply_chunk(record, version, gen, self.params, decode)
                self._tokens_by_version[version] += record.model_tokens - before
                self._route(group, record, stage)

    def _shutdown_workers(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for worker in self._workers:
            worker.join()

    def _checkpoint(self) -> None:
        assert self.checkpoint_dir is not None
        with self._cond:
            saved = {
                "version": self.version,
                "cursor": self.cursor,
                "trained": [list(ids) for ids in self.trained],
                "history": [dict(h) for h in self.history],
                "tokens_by_version": {str(k): v for k, v in self._tokens_by_version.items()},
                "staleness": dataclasses.asdict(self.staleness.counts),
                "registry": {str(v): c for v, c in self.sync.registry.items()},
                "in_flight": [g.to_json() for g in sorted(self.groups.values(), key=lambda g: g.prompt_index)],
                "finished": [g.to_json() for g in self.finished],
            }
        resume.save(self.checkpoint_dir, self.step, saved, self.trainer.state(), keep=self.cfg.keep_checkpoints)

    @staticmethod
    def ledger_problems(saved: Mapping[str, Any]) -> list[str]:
        """What breaks "every admitted prompt is trained once, in flight or waiting" in a saved state."""
        trained = [i for step in saved["trained"] for i in step]
        waiting = [g["prompt_index"] for g in saved["in_flight"]] + [g["prompt_index"] for g in saved["finished"]]
        problems = []
        if len(set(trained)) != len(trained):
            problems.append(f"trained twice: {sorted(i for i, n in Counter(trained).items() if n > 1)}")
        if set(trained) & set(waiting):
            problems.append(f"trained and still waiting: {sorted(set(trained) & set(waiting))}")
        missing = set(range(saved["cursor"])) - set(trained) - set(waiting)
        if missing:
            problems.append(f"admitted but lost: {sorted(missing)}")
        return problems
