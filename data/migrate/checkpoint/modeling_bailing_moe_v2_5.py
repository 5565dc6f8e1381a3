"""Hugging Face ``BailingMoeV2_5ForCausalLM`` (Ling-2.5/2.6 hybrid) around the plain-PyTorch modules of
``hybrid.py``.

This file, ``configuration_bailing_moe_v2_5.py`` and the architecture files it imports relatively are copied
into every exported hybrid checkpoint, so ``AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)``
runs the code we train, offline and without this repository (Lightning attention then runs on its built-in
torch implementation; see ``lightning_attention.py``). The state-dict names are the official ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers import initialization as hf_init
from transformers.utils import ModelOutput

from .configuration_bailing_moe_v2_5 import BailingMoeV2_5Config
from .hybrid import HybridModel
from .ling2 import causal_lm_forward, init_module
from .moe import RouterStats


@dataclass
class BailingMoeV2_5CausalLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: Any = None
    lm_loss: torch.Tensor | None = None
    mtp_loss: torch.Tensor | None = None
    router_stats: RouterStats | None = None


class BailingMoeV2_5PreTrainedModel(PreTrainedModel):
    config_class = BailingMoeV2_5Config
    base_model_prefix = "model"
    _no_split_modules: ClassVar[list[str]] = ["HybridDecoderLayer", "HybridMTPLayer"]

    def _init_weights(self, module: nn.Module) -> None:
        # transformers' init functions skip tensors already loaded from a checkpoint.
        init_module(module, self.config.initializer_range, init=hf_init)


class BailingMoeV2_5ForCausalLM(BailingMoeV2_5PreTrainedModel, GenerationMixin):
    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "model.word_embeddings.weight"}

    def __init__(self, config: BailingMoeV2_5Config) -> None:
        super().__init__(config)
        self.model = HybridModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.word_embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.word_embeddings = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
        use_cache: bool | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> BailingMoeV2_5CausalLMOutput:
        """``**kwargs`` takes what ``generate()`` passes besides (``cache_position``, ``return_dict``, ...):
        positions come from ``attention_mask`` and the cache length instead. ``generate()`` hands in an empty
        ``DynamicCache``; the model swaps in a ``HybridCache`` and returns it."""
        out = causal_lm_forward(
            self.model, self.lm_head, self.config, input_ids,
            labels=labels, attention_mask=attention_mask, past_key_values=past_key_values,
            use_cache=bool(use_cache), position_ids=position_ids,
        )  # fmt: skip
        return BailingMoeV2_5CausalLMOutput(**vars(out))
