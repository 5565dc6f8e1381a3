"""The loop: accumulation and logging semantics, checkpoint cadence, hooks, and in-process resume."""

import pytest
import torch
from training_toys import lm_loss, markov_tokens, same, toy_model

from configs.training import EngineConfig, OptimConfig, TrainLoopConfig
from training.builder import build_engine
from training.checkpoint import list_checkpoints, load_model_weights
from training.data import TokenBatches
from training.loop import progress_enabled, train

TOKENS = markov_tokens(4000)


def setup(backend="torch", zero_stage=0, **loop_kwargs):
    loop = TrainLoopConfig(
        **{
            "max_steps": 6,
            "micro_batch_size": 4,
            "grad_accum_steps": 2,
            "seq_len": 16,
            "log_every": 1,
            "checkpoint_every": 2,
            "keep_checkpoints": 2,
            **loop_kwargs,
        }
    )
    engine = build_engine(
        toy_model(seed=0),
        EngineConfig(backend=backend, zero_stage=zero_stage),
        OptimConfig(lr=1e-2, warmup_steps=3),
        total_steps=loop.max_steps,
        grad_accum_steps=loop.grad_accum_steps,
        micro_batch_size=loop.micro_batch_size,
    )
    batches = TokenBatches(TOKENS, loop.seq_len, loop.micro_batch_size, loop.seed)
    return engine, batches, loop


def run(checkpoint_dir, backend="torch", zero_stage=0, **kwargs):
    loop_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in TrainLoopConfig.__dataclass_fields__}
    engine, batches, loop = setup(backend, zero_stage, **loop_kwargs)
    return train(engine, batches, lm_loss, loop, checkpoint_dir=checkpoint_dir, **kwargs)


def test_logs_checkpoints_and_hooks_follow_the_config(tmp_path):
    engine, batches, loop = setup(max_steps=5, log_every=2)
    micro_losses, micro_stats, hook_calls, logs = [], [], [], []

    def recording_loss(model, batch):
        loss, stats = lm_loss(model, batch)
        micro_losses.append(loss.item())
        micro_stats.append(stats)
        return loss, stats

    result = train(
        engine,
        batches,
        recording_loss,
        loop,
        checkpoint_dir=tmp_path,
        on_log=lambda step, m: logs.append((step, m)),
        after_step=lambda module, stats: hook_calls.append((module, stats)),
    )

    assert [step for step, _ in logs] == [2, 4, 5]
    assert set(logs[0][1]) == {"loss", "accuracy", "grad_norm", "lr", "tokens_per_s", "tokens"}
    # Logged loss: the mean of the micro-batch losses of the steps since the previous log.
    assert logs[0][1]["loss"] == pytest.approx(sum(micro_losses[:4]) / 4, rel=1e-6)
    assert logs[2][1]["loss"] == pytest.approx(sum(micro_losses[8:]) / 2, rel=1e-6)
    assert logs[2][1]["tokens"] == 5 * 2 * 4 * 16
    # after_step: once per optimizer step, the unwrapped module, stats averaged over its micro-batches.
    assert len(hook_calls) == 5 and all(module is engine.module for module, _ in hook_calls)
    expected = (micro_stats[8]["logit_mean_V"] + micro_stats[9]["logit_mean_V"]) / 2
    torch.testing.assert_close(hook_calls[-1][1]["logit_mean_V"], expected)
    assert [p.name for p in result.checkpoints] == ["step-000004", "step-000005"]
    assert result.step == 5 and result.resumed_from == 0 and result.metrics == logs[-1][1]


@pytest.mark.parametrize(("backend", "zero_stage"), [("torch", 0), ("deepspeed", 3)])
def test_stopping_and_continuing_equals_one_straight_run(tmp_path, backend, zero_stage):
    straight = run(tmp_path / "straight", backend, zero_stage, max_steps=6)
    first = run(tmp_path / "split", backend, zero_stage, max_steps=4)
    second = run(tmp_path / "split", backend, zero_stage, max_steps=6)
    assert first.step == 4 and second.resumed_from == 4 and second.step == 6
    assert same(load_model_weights(second.checkpoints[-1]), load_model_weights(straight.checkpoints[-1]))


def test_a_finished_run_resumes_to_its_final_metrics_without_training(tmp_path):
    done = run(tmp_path)
    again = run(tmp_path, after_step=lambda *_: pytest.fail("trained again"))
    assert again.resumed_from == 6 and again.metrics == done.metrics and again.checkpoints == done.checkpoints


def test_fresh_start_refuses_a_directory_with_checkpoints(tmp_path):
    run(tmp_path, max_steps=2)
    with pytest.raises(FileExistsError, match="holds checkpoints"):
        run(tmp_path, max_steps=2, resume=False)
    assert len(list_checkpoints(tmp_path)) == 1


@pytest.mark.parametrize(("value", "expected"), [("0", False), ("1", True), (None, False)])
def test_progress_bar_switch(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("LING26_PROGRESS", raising=False)  # pytest captures stderr: not a terminal
    else:
        monkeypatch.setenv("LING26_PROGRESS", value)
    assert progress_enabled() is expected
