"""Engine: DeepSpeed ZeRO 0-3 and the torch backend train the toy LM, agree with each other, and never
touch frozen weights."""

import pytest
import torch
from training_toys import lm_loss, markov_tokens, toy_model

from configs.training import EngineConfig, OptimConfig
from training.builder import build_engine
from training.data import TokenBatches
from training.deepspeed_engine import deepspeed_config
from training.engine import trainable_param_groups

TOKENS = markov_tokens(4000)


def make_engine(
    backend="deepspeed",
    zero_stage=0,
    *,
    grad_accum_steps=1,
    micro_batch_size=4,
    param_groups=None,
    model=None,
    **engine_kwargs,
):
    return build_engine(
        model if model is not None else toy_model(seed=0, dropout=0.0),
        EngineConfig(backend=backend, zero_stage=zero_stage, **engine_kwargs),
        OptimConfig(lr=1e-2, warmup_steps=2),
        total_steps=20,
        param_groups=param_groups,
        grad_accum_steps=grad_accum_steps,
        micro_batch_size=micro_batch_size,
    )


def run(engine, steps, micro_batch_size=4):
    """Per-step mean micro-batch loss and the StepResults of ``steps`` optimizer steps."""
    batches = TokenBatches(TOKENS, 16, micro_batch_size, seed=0, rank=engine.rank, world_size=engine.world_size)
    losses, results = [], []
    for _ in range(steps):
        total = 0.0
        for _ in range(engine.grad_accum_steps):
            loss, _ = lm_loss(engine, next(batches))
            engine.backward(loss)
            total += loss.item()
        results.append(engine.step())
        losses.append(total / engine.grad_accum_steps)
    return losses, results


@pytest.mark.parametrize(
    ("zero_stage", "precision", "offload_optimizer"),
    [
        (0, "fp32", False),
        (1, "fp32", False),
        (2, "fp32", False),
        (3, "fp32", False),
        (0, "bf16", False),
        (2, "bf16", True),
        (3, "bf16", True),
    ],
)
def test_deepspeed_trains_and_leaves_frozen_weights_bitwise_alone(zero_stage, precision, offload_optimizer):
    engine = make_engine("deepspeed", zero_stage, precision=precision, offload_optimizer=offload_optimizer)
    before = engine.full_state_dict()
    losses, results = run(engine, 12)
    after = engine.full_state_dict()
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2, losses
    assert all(r.grad_norm > 0 for r in results)
    for name in before:
        frozen = name.startswith("frozen.")
        assert torch.equal(before[name], after[name]) == frozen, name


def test_torch_backend_leaves_frozen_weights_bitwise_alone():
    engine = make_engine("torch")
    before = engine.full_state_dict()
    run(engine, 4)
    after = engine.full_state_dict()
    assert all(torch.equal(before[n], after[n]) == n.startswith("frozen.") for n in before)


def test_deepspeed_zero0_and_torch_backend_follow_the_same_trajectory():
    ds_engine, torch_engine = make_engine("deepspeed", grad_accum_steps=2), make_engine("torch", grad_accum_steps=2)
    ds_losses, ds_results = run(ds_engine, 8)
    torch_losses, torch_results = run(torch_engine, 8)
    assert ds_losses == pytest.approx(torch_losses, rel=1e-6, abs=0)
    assert [r.grad_norm for r in ds_results] == pytest.approx([r.grad_norm for r in torch_results], rel=1e-6)
    for name, tensor in ds_engine.full_state_dict().items():
        torch.testing.assert_close(tensor, torch_engine.full_state_dict()[name], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(("backend", "zero_stage"), [("torch", 0), ("deepspeed", 2), ("deepspeed", 3)])
def test_gradient_accumulation_equals_one_big_micro_batch(backend, zero_stage):
    accumulated, _ = run(make_engine(backend, zero_stage, grad_accum_steps=2, micro_batch_size=4), 6, 4)
    whole, _ = run(make_engine(backend, zero_stage, grad_accum_steps=1, micro_batch_size=8), 6, 8)
    assert accumulated == pytest.approx(whole, rel=1e-5)


def test_lr_follows_the_wsm_warmup_and_grad_norm_is_reported_before_clipping():
    engine = make_engine("torch", grad_clip=1e-3)
    _, results = run(engine, 4)
    assert [r.lr for r in results] == pytest.approx([5e-3, 1e-2, 1e-2, 1e-2])
    assert all(r.grad_norm > 1e-3 for r in results)


@pytest.mark.parametrize(("backend", "zero_stage"), [("torch", 0), ("deepspeed", 1), ("deepspeed", 3)])
def test_param_groups_set_their_own_lr_and_frozen_members_are_dropped(backend, zero_stage):
    model = toy_model(seed=0, dropout=0.0)
    groups = [
        {"params": [*model.embed.parameters(), *model.mix.parameters(), *model.norm.parameters()]},
        {"params": [*model.head.parameters(), *model.frozen.parameters()], "lr": 0.0, "weight_decay": 0.0},
    ]
    engine = make_engine(backend, zero_stage, param_groups=groups, model=model)
    before = engine.full_state_dict()
    run(engine, 3)
    after = engine.full_state_dict()
    unchanged = {n for n in before if torch.equal(before[n], after[n])}
    assert unchanged == {"head.weight", "head.bias", "frozen.weight", "frozen.bias"}


def test_step_and_backward_counts_are_checked():
    engine = make_engine("torch", grad_accum_steps=2)
    batch = next(TokenBatches(TOKENS, 16, 4, seed=0))
    with pytest.raises(RuntimeError, match="after 0 backward"):
        engine.step()
    for _ in range(2):
        engine.backward(lm_loss(engine, batch)[0])
    with pytest.raises(RuntimeError, match="more than grad_accum_steps=2"):
        engine.backward(lm_loss(engine, batch)[0])


def test_nothing_to_train_and_unsupported_torch_configs_are_errors():
    model = toy_model()
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no parameter requires grad"):
        trainable_param_groups(model, OptimConfig())
    with pytest.raises(ValueError, match="backend='torch' supports"):
        make_engine("torch", 2)


def test_deepspeed_config_is_built_from_our_configs():
    cfg = deepspeed_config(
        EngineConfig(zero_stage=0), OptimConfig(), micro_batch_size=4, grad_accum_steps=3, trainable_numel=10
    )
    assert cfg["gradient_clipping"] == 0.0  # ZeRO 0 fp32: the engine clips, DeepSpeed would not report the norm
    assert cfg["gradient_accumulation_steps"] == 3 and cfg["train_micro_batch_size_per_gpu"] == 4
    assert cfg["optimizer"]["params"] == {
        "lr": 3e-3,
        "betas": [0.9, 0.95],
        "eps": 1e-8,
        "weight_decay": 0.1,
        "torch_adam": True,
    }
    cfg = deepspeed_config(
        EngineConfig(zero_stage=3, precision="bf16", offload_optimizer=True, grad_clip=0.5),
        OptimConfig(),
        micro_batch_size=1,
        grad_accum_steps=1,
        trainable_numel=10**12,
    )
    assert cfg["gradient_clipping"] == 0.5 and cfg["bf16"] == {"enabled": True}
    assert cfg["zero_optimization"] == {
        "stage": 3,
        "reduce_bucket_size": 500_000_000,
        "offload_optimizer": {"device": "cpu"},
    }
