"""Hugging Face ``BailingMoeV2_5ForCausalLM`` (Ling-2.5/2.6 hybrid) around the plain-PyTorch modules of
``hybrid.py``.

This file, ``configuration_bailing_moe_v2_5.py`` and the architecture files it imports relatively are copied
into every exported hybrid checkpoint, so ``AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)``
runs the code we train, offline and without this repository (Lightning attention then runs on its built-in
torch implementation; see ``lightning_attention.py``). The state-dict names are the official ones.
"""

from __future__ import annotations

from typing import ClassVar

from transformers import GenerationMixin

from .configuration_bailing_moe_v2_5 import BailingMoeV2_5Config
from .hf_causal_lm import BailingCausalLMMixin, BailingPreTrainedModel
from .hybrid import HybridModel


class BailingMoeV2_5PreTrainedModel(BailingPreTrainedModel):
    config_class = BailingMoeV2_5Config
    _no_split_modules: ClassVar[list[str]] = ["HybridDecoderLayer", "HybridMTPLayer"]


class BailingMoeV2_5ForCausalLM(BailingCausalLMMixin, BailingMoeV2_5PreTrainedModel, GenerationMixin):
    backbone = HybridModel
