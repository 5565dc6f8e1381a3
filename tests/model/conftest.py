import dataclasses

import pytest
import torch

from configs.model import ModelConfig, tiny_model
from model.ling2 import Ling2ForCausalLM

# Tiny shapes gain nothing from intra-op threads, and on a shared 2-core machine two spinning OpenMP threads
# make a forward pass ~100x slower.
torch.set_num_threads(1)


@pytest.fixture
def cfg() -> ModelConfig:
    return tiny_model()


@pytest.fixture
def make_model(cfg):
    """Factory of seeded tiny models in eval mode; keyword overrides replace config fields."""

    def make(seed: int = 0, **overrides) -> Ling2ForCausalLM:
        torch.manual_seed(seed)
        return Ling2ForCausalLM(dataclasses.replace(cfg, **overrides)).eval()

    return make


@pytest.fixture
def model(make_model) -> Ling2ForCausalLM:
    return make_model()


@pytest.fixture
def tokens(cfg) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (2, 13), generator=torch.Generator().manual_seed(1))
