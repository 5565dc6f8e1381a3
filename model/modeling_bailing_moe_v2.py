"""Hugging Face ``BailingMoeV2ForCausalLM`` (Ling-2.0) around the plain-PyTorch modules of ``ling2.py``.

This file, ``configuration_bailing_moe_v2.py`` and the architecture files it imports relatively (``ling2``,
``hf_causal_lm``, ``decoder``, ``moe``, ``attention``, ``append_buffer``, ``layers``) are copied into every
exported checkpoint, so ``AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`` runs the code we
train, offline and without this repository. The state-dict names are the official ones, so released Ling-2.0 checkpoints load too.
"""

from __future__ import annotations

from typing import ClassVar

from transformers import GenerationMixin

from .configuration_bailing_moe_v2 import BailingMoeV2Config
from .hf_causal_lm import BailingCausalLMMixin, BailingPreTrainedModel
from .ling2 import Ling2Model


class BailingMoeV2PreTrainedModel(BailingPreTrainedModel):
    config_class = BailingMoeV2Config
    _no_split_modules: ClassVar[list[str]] = ["DecoderLayer", "MTPLayer"]


class BailingMoeV2ForCausalLM(BailingCausalLMMixin, BailingMoeV2PreTrainedModel, GenerationMixin):
    backbone = Ling2Model
