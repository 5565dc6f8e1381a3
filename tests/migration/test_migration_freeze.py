"""Warmup freezing: the exact trainable set of each step, and an AdamW step (weight decay on, every parameter
handed to the optimizer) that moves all trainable parameters and leaves every frozen one bitwise unchanged."""

import pytest
import torch

from model.migration import (
    convert_to_mla,
    freeze_for_linear_warmup,
    freeze_for_mla_warmup,
    freeze_for_partial_training,
    fuse_qk_norm,
    gqa_to_hybrid,
    unfreeze_all,
)

LIGHTNING, SOFTMAX = (0, 1, 2), (3, 4)  # tiny config: layer 3 and the MTP layer 4 are softmax / MLA


def names(layers, params):
    return sorted(f"model.layers.{i}.attention.{p}.weight" for i in layers for p in params)


@pytest.fixture
def stages(cfg, base, calibration):
    step1 = gqa_to_hybrid(base, cfg)
    step3a, _ = fuse_qk_norm(step1, calibration)
    step3c, _ = convert_to_mla(step3a, calibration)
    return {"step1": step1, "step3a": step3a, "step3c": step3c}


def adamw_step(model, ids):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    model.train()
    model(ids, labels=ids).loss.backward()
    optimizer.step()


@pytest.mark.parametrize(
    ("stage", "freeze", "expected"),
    [
        ("step1", freeze_for_linear_warmup, names(LIGHTNING, ["query_key_value", "query_layernorm", "key_layernorm"])),
        (
            "step3a",
            freeze_for_partial_training,
            sorted(
                names(LIGHTNING, ["query_key_value", "query_layernorm", "key_layernorm", "g_proj", "g_norm"])
                + names(SOFTMAX, ["query_key_value"])
            ),
        ),
        (
            "step3c",
            freeze_for_mla_warmup,
            names(
                SOFTMAX,
                ["q_a_proj", "q_a_layernorm", "q_b_proj", "kv_a_proj_with_mqa", "kv_a_layernorm", "kv_b_proj"],
            ),
        ),
    ],
)
def test_exact_trainable_set_and_frozen_parameters_do_not_move(stages, make_batches, stage, freeze, expected):
    model = stages[stage]
    trainable = freeze(model)
    assert trainable == expected
    assert sorted(n for n, p in model.named_parameters() if p.requires_grad) == expected
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    (ids,) = make_batches(1, seed=7)
    adamw_step(model, ids)
    for n, p in model.named_parameters():
        if n in expected:
            assert not torch.equal(p, before[n]), f"{n} should have trained"
        else:
            assert p.grad is None and torch.equal(p, before[n]), f"{n} should be frozen"
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())


def test_unfreeze_all_and_steps_without_targets_fail(stages, base):
    model = stages["step3c"]
    freeze_for_mla_warmup(model)
    assert unfreeze_all(model) == sorted(n for n, _ in model.named_parameters())
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(ValueError, match="no parameter"):
        freeze_for_mla_warmup(stages["step1"])  # no MLA layer yet
    with pytest.raises(ValueError, match="no parameter"):
        freeze_for_linear_warmup(base)  # the GQA base has no Lightning layer
