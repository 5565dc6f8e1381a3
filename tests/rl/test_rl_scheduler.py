"""The asynchronous scheduler on the toy stack: η = 0 is the synchronous trajectory bit for bit, partial
rollouts carry their versions, slow environment calls do not stall other rows, every family runs behind
one environment contract, and a trainer never trains on a version it cannot name."""

import threading

import pytest
import torch

from configs.data import EnvironmentsConfig
from environments import all_environments
from inference.weight_sync import UnknownPolicyVersion
from training.rl.environment import EnvironmentPool, lognormal_latency
from training.rl.records import RolloutGroup, RolloutRecord
from training.rl.rows import apply_chunk, apply_observation, chunk_params
from training.rl.scheduler import PromptStream, SchedulerConfig
from training.rl.toy import ToyEnvironment, toy_reward, toy_scheduler, toy_tasks

CFG = SchedulerConfig(
    max_staleness=0, batch_groups=3, samples_per_prompt=3, max_new_tokens=16, chunk_tokens=4, max_turns=2, seed=5
)


def synchronous_reference(cfg, steps):
    """Generate a batch, verify it, train on it, push: one loop, no threads, no scheduler."""
    parts = toy_scheduler(cfg)
    engine, sync, trainer, env = parts.engine, parts.sync, parts.trainer, ToyEnvironment()
    prompts = PromptStream(toy_tasks(), cfg.seed)
    sync.push(trainer.policy_state(), 0)
    history = []
    for step in range(steps):
        groups = []
        for index in range(step * cfg.batch_groups, (step + 1) * cfg.batch_groups):
            task = prompts[index]
            records = [
                RolloutRecord(index, s, task.task_id, task.family, engine.encode(task.prompt))
                for s in range(cfg.samples_per_prompt)
            ]
            for record in records:
                stage = "generate"
                while stage != "verify":
                    if stage == "generate":
                        context = record.prompt_ids + record.response_ids
                        version, (gen,) = engine.generate([context], chunk_params(record, cfg.row_params))
                        stage = apply_chunk(record, version, gen, cfg.row_params, engine.decode)
                    else:
                        stage = apply_observation(record, env.observe(task, record.text), engine.encode)
            verdicts = [env.verify(task, r.text) for r in records]
            for record, reward in zip(records, toy_reward(records, verdicts), strict=True):
                record.reward = reward
            groups.append(RolloutGroup(index, task, records, admitted_version=step))
        history.append(trainer.train_step(groups, version=step))
        sync.push(trainer.policy_state(), step + 1)
    parts.envs.shutdown()
    return history, trainer.policy_state()


def run(scheduler, steps):
    try:
        return scheduler.run(steps)
    finally:
        scheduler.envs.shutdown()


def test_eta_zero_reproduces_the_synchronous_trajectory_exactly():
    steps = 6
    reference, reference_weights = synchronous_reference(CFG, steps)
    # Two workers and random environment latency: completion order differs from the loop's every step.
    scheduler = toy_scheduler(CFG, latency=lognormal_latency(0.002, 1.0))
    history = run(scheduler, steps)
    assert [h["loss"] for h in history] == [r["loss"] for r in reference]
    for ours, theirs in zip(history, reference, strict=True):
        assert {k: ours[k] for k in theirs} == theirs
    weights = scheduler.trainer.policy_state()
    assert all(torch.equal(weights[k], reference_weights[k]) for k in weights)
    assert all(h["max_staleness"] == 0 and h["partial_rows"] == 0 for h in history)
    assert all(h["first_update_ratio_mean"] == 1.0 for h in history)  # first update on-policy: ratio exactly 1
    assert scheduler.trained == [[3 * s, 3 * s + 1, 3 * s + 2] for s in range(steps)]


def test_partial_rollouts_resume_under_the_next_version_and_say_so():
    cfg = SchedulerConfig(
        max_staleness=2, batch_groups=2, samples_per_prompt=2, max_new_tokens=24, chunk_tokens=3, step_token_budget=24
    )
    scheduler = toy_scheduler(cfg, latency=lognormal_latency(0.002, 1.0))
    trained_groups = []
    original = scheduler.trainer.train_step

    def spy(groups, *, version):
        for g in groups:
            for r in g.records:
                # Versions never decrease along a row, and no token is newer than the policy being trained.
                assert r.versions == sorted(r.versions) and max(r.versions, default=version) <= version
        trained_groups.extend(groups)
        return original(groups, version=version)

    scheduler.trainer.train_step = spy
    history = run(scheduler, 12)
    segments = [len(r.segments) for g in trained_groups for r in g.records]
    assert max(segments) > 1, "no row crossed a step boundary"
    assert sum(h["partial_rows"] for h in history) == sum(n > 1 for n in segments)
    assert any(h["groups"] < cfg.batch_groups for h in history)  # the token budget ended some steps early
    assert max(h["max_staleness"] for h in history) >= 1


class BlockingEnvironment(ToyEnvironment):
    """The first tool call of the run waits until released: a sandbox that hangs."""

    def __init__(self):
        self.release, self.first = threading.Event(), threading.Lock()
        self.blocked = False

    def observe(self, task, transcript):
        with self.first:
            block, self.blocked = not self.blocked, True
        if block:
            assert self.release.wait(30)
        return super().observe(task, transcript)


def test_a_slow_tool_call_does_not_stop_other_rows_or_the_trainer():
    cfg = SchedulerConfig(max_staleness=2, batch_groups=2, samples_per_prompt=2, max_new_tokens=16, seed=1)
    scheduler = toy_scheduler(cfg)
    env = BlockingEnvironment()
    scheduler.envs = EnvironmentPool({"toy": env}, max_workers=8)
    try:
        history = scheduler.run(3)  # finishes while one row is stuck in its tool call
        assert env.blocked and not env.release.is_set() and len(history) == 3
        waiting = [r for g in scheduler.groups.values() for r in g.records if r.stage == "observe"]
        # The hung row is still waiting; another row's (fast) tool call may be in flight as run() returns,
        # so more than one can be waiting at that instant, never none.
        assert waiting and all(r.response_ids for r in waiting)
    finally:
        env.release.set()
        scheduler.envs.shutdown()


def test_every_family_runs_behind_one_environment_contract():
    envs = all_environments(EnvironmentsConfig())
    pool = EnvironmentPool(envs, max_workers=4, latency=lognormal_latency(0.001, 0.5))
    try:
        for family, env in envs.items():
            task = env.generate(1, seed=3, difficulty=2, allow_fewer=True)[0]
            for candidate in env.reference_responses(task, seed=0, n=3):
                assert pool.verify(task, candidate.text).result(timeout=60) == env.verify(task, candidate.text)
            transcript = candidate.text
            assert pool.observe(task, transcript).result(timeout=60) == env.observe(task, transcript), family
    finally:
        pool.shutdown()
    with pytest.raises(KeyError, match="no environment"):
        EnvironmentPool({}).verify(toy_tasks(1)[0], "x")


def test_rollouts_from_a_version_the_trainer_never_pushed_are_refused(tmp_path):
    cfg = SchedulerConfig(max_staleness=1, batch_groups=2, samples_per_prompt=2, max_new_tokens=12)
    scheduler = toy_scheduler(cfg)
    scheduler.sync.push(scheduler.trainer.policy_state(), 0)
    scheduler.sync.restore_registry({})  # a trainer that forgot what it pushed
    with pytest.raises(UnknownPolicyVersion, match="never pushed"):
        scheduler.sync.require_known([0])
    original = scheduler._start
    scheduler._start = lambda: (original(), scheduler.sync.restore_registry({}))
    with pytest.raises(UnknownPolicyVersion, match="refusing to train"):
        run(scheduler, 1)


def test_config_errors():
    for bad in ({"batch_groups": 0}, {"step_token_budget": 0}, {"checkpoint_every": 0}, {"rollout_workers": 0}):
        with pytest.raises(ValueError):
            SchedulerConfig(**bad)
