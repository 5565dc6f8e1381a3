"""Fixtures of the migration tests: a tiny Ling-2.0 base whose attention matters, and token batches.

The base is randomly initialised, not trained (training one until attention matters takes ~20 s of CPU; see
``measure_conversion.py`` for the trained-base numbers). A larger init std (0.08) and norm weights drawn from
U(0.5, 1.5) make the attention outputs dominate the residual stream and the QK-Norm γ non-trivial, so that
replacing or approximating an attention layer visibly moves the logits.
"""

import dataclasses

import pytest
import torch

from configs.model import ModelConfig, tiny_model
from model.layers import RMSNorm
from model.ling2 import Ling2ForCausalLM
from model.moe import Router

# Tiny shapes gain nothing from intra-op threads; on a shared 2-core machine spinning threads cost ~100x.
torch.set_num_threads(1)

BASE_STD = 0.08


@pytest.fixture
def cfg() -> ModelConfig:
    return dataclasses.replace(tiny_model(), initializer_range=BASE_STD)


def perturbed_base(config: ModelConfig, seed: int = 0) -> Ling2ForCausalLM:
    torch.manual_seed(seed)
    model = Ling2ForCausalLM(config).eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, RMSNorm):
                module.weight.uniform_(0.5, 1.5)
            if isinstance(module, Router):
                module.expert_bias.uniform_(-0.01, 0.01)
    return model


@pytest.fixture
def make_base(cfg):
    def make(seed: int = 0, **overrides) -> Ling2ForCausalLM:
        return perturbed_base(dataclasses.replace(cfg, **overrides), seed)

    return make


@pytest.fixture
def base(make_base) -> Ling2ForCausalLM:
    return make_base()


@pytest.fixture
def make_batches(cfg):
    def make(num: int, seed: int, shape=(4, 24)) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return [torch.randint(0, cfg.vocab_size, shape, generator=g) for _ in range(num)]

    return make


@pytest.fixture
def calibration(make_batches) -> list[torch.Tensor]:
    return make_batches(4, seed=11)


@pytest.fixture
def heldout(make_batches) -> list[torch.Tensor]:
    return make_batches(2, seed=12)
