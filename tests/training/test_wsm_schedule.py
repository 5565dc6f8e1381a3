"""WSM: warmup then constant (optional cosine variant), and merging the last k checkpoints."""

import pytest
import torch
from training_toys import toy_model

from configs.training import EngineConfig, OptimConfig
from training.builder import build_engine
from training.checkpoint import save_checkpoint
from training.merge import merge_checkpoints
from training.schedule import wsm_lr_factor


def test_warmup_is_linear_and_reaches_the_peak_on_its_last_step():
    factors = [wsm_lr_factor(s, warmup_steps=4, total_steps=100) for s in range(7)]
    assert factors == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0]


def test_stable_phase_is_constant_to_the_end_by_default():
    assert {wsm_lr_factor(s, warmup_steps=4, total_steps=100) for s in range(4, 200)} == {1.0}
    assert wsm_lr_factor(0, warmup_steps=0, total_steps=10) == 1.0


def test_min_lr_ratio_variant_decays_by_cosine_to_the_floor():
    f = lambda s: wsm_lr_factor(s, warmup_steps=10, total_steps=110, min_lr_ratio=0.1)  # noqa: E731
    assert f(9) == 1.0 and f(10) == 1.0
    assert f(60) == pytest.approx(0.55)
    assert f(110) == pytest.approx(0.1) and f(500) == pytest.approx(0.1)
    assert all(f(s) >= f(s + 1) for s in range(10, 120))


def test_negative_step_is_an_error():
    with pytest.raises(ValueError):
        wsm_lr_factor(-1, warmup_steps=1, total_steps=2)


@pytest.fixture
def three_checkpoints(tmp_path):
    engine = build_engine(toy_model(seed=0), EngineConfig(backend="torch"), OptimConfig(), total_steps=1)
    paths, weights = [], []
    for step, seed in enumerate((1, 2, 3), start=1):
        engine.load_full_state_dict(toy_model(seed=seed).state_dict())
        weights.append(engine.full_state_dict())
        paths.append(save_checkpoint(engine, tmp_path, step=step, data_state={}))
    return paths, weights


def test_merge_of_k_checkpoints_is_the_mean_of_their_weights(three_checkpoints):
    paths, weights = three_checkpoints
    merged = merge_checkpoints(paths[1:])
    assert merged.keys() == weights[0].keys()
    for name, tensor in merged.items():
        assert tensor.dtype == weights[0][name].dtype
        assert torch.equal(tensor, (weights[1][name] + weights[2][name]) / 2), name
    single = merge_checkpoints(paths[:1])
    assert all(torch.equal(single[n], weights[0][n]) for n in single)


def test_merge_accumulates_bf16_weights_in_fp32(tmp_path):
    engine = build_engine(toy_model(seed=0), EngineConfig(precision="bf16"), OptimConfig(), total_steps=1)
    # In bf16, 256 + 1 rounds back to 256, so only an fp32 sum gives the mean 258 / 3 = 86.
    values = [256.0, 1.0, 1.0]
    paths = []
    for step, value in enumerate(values, start=1):
        engine.module.head.bias.data.fill_(value)
        paths.append(save_checkpoint(engine, tmp_path, step=step, data_state={}))
    weights = [torch.full((2,), v, dtype=torch.bfloat16) for v in values]
    assert (weights[0] + weights[1] + weights[2]).float()[0] == 256.0  # bf16 accumulation would lose the ones
    merged = merge_checkpoints(paths)["head.bias"]
    assert merged.dtype == torch.bfloat16 and torch.equal(merged, torch.full_like(merged, 86.0))


def test_merge_needs_checkpoints():
    with pytest.raises(ValueError):
        merge_checkpoints([])
