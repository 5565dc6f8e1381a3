"""What the Hugging Face wrappers of both architectures share (``modeling_bailing_moe_v2.py`` for Ling-2.0,
``modeling_bailing_moe_v2_5.py`` for the 2.5/2.6 hybrid): the output type, weight init, and a causal-LM
mixin around a plain-PyTorch backbone and ``causal_lm_forward``. Each modeling file names its config class,
backbone and unsplittable layers; this file is copied into every exported checkpoint with them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as hf_init
from transformers.utils import ModelOutput

from .ling2 import causal_lm_forward, init_module
from .moe import RouterStats


@dataclass
class BailingCausalLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    past_key_values: Any = None
    lm_loss: torch.Tensor | None = None
    mtp_loss: torch.Tensor | None = None
    router_stats: RouterStats | None = None


class BailingPreTrainedModel(PreTrainedModel):
    base_model_prefix = "model"

    def _init_weights(self, module: nn.Module) -> None:
        # transformers' init functions skip tensors already loaded from a checkpoint.
        init_module(module, self.config.initializer_range, init=hf_init)


def own_cpu_tensor_memory(module: nn.Module, alignment: int = 64) -> None:
    """Copy CPU parameters and buffers that live at a non-allocator-aligned address (views into a loaded
    safetensors buffer) into memory of their own. One-row matmuls sum in another order on a misaligned
    matrix on some CPUs, so without this a loaded model's logits can differ from the trained model's in
    the last bit (see ``model/weights_io.py`` in the training repository)."""
    for tensor in (*module.parameters(), *module.buffers()):
        if tensor.device.type == "cpu" and tensor.data_ptr() % alignment:
            tensor.data = tensor.data.clone(memory_format=torch.contiguous_format)


class BailingCausalLMMixin:
    """``model`` (the subclass's ``backbone``) + ``lm_head``; listed first in a ``PreTrainedModel`` subclass's
    bases, ahead of ``GenerationMixin``."""

    backbone: type[nn.Module]
    _tied_weights_keys: ClassVar[dict[str, str]] = {"lm_head.weight": "model.word_embeddings.weight"}

    def __init__(self, config) -> None:
        super().__init__(config)
        self.model = self.backbone(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any):
        model = super().from_pretrained(*args, **kwargs)
        own_cpu_tensor_memory(model)
        return model

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
    ) -> BailingCausalLMOutput:
        """``**kwargs`` takes what ``generate()`` passes besides (``cache_position``, ``return_dict``, ...):
        positions come from ``attention_mask`` and the cache length instead. The hybrid swaps the empty
        ``DynamicCache`` that ``generate()`` hands in for a ``HybridCache`` and returns it."""
        out = causal_lm_forward(
            self.model, self.lm_head, self.config, input_ids,
            labels=labels, attention_mask=attention_mask, past_key_values=past_key_values,
            use_cache=bool(use_cache), position_ids=position_ids,
        )  # fmt: skip
        return BailingCausalLMOutput(**vars(out))
