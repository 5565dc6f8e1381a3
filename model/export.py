"""Checkpoints in the official Ling-2.0 Hugging Face layout: ``export_hf`` writes one, ``load_hf`` reads one back
(ours, or a released inclusionAI checkpoint folder).

A folder holds ``config.json`` (official keys, ``architectures`` and ``auto_map``), ``model.safetensors`` with
the official tensor names, and the architecture source files, so vLLM / SGLang load it natively and
``AutoModelForCausalLM.from_pretrained(dir, trust_remote_code=True)`` runs our own code offline.

Why the source travels as several files rather than one generated ``modeling_bailing_moe_v2.py``: the
architecture files import only torch and each other (relatively), and transformers' dynamic-module loader
copies relative imports along; so the trained code and the shipped code are the same files, not a copy kept in
sync, and each stays small.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

from configs.base import ConfigError, from_dict, to_dict
from configs.model import ModelConfig
from model.ling2 import Ling2ForCausalLM
from model.weights_io import load_owned

ARCHITECTURE_FILES = (
    "configuration_bailing_moe_v2.py",
    "modeling_bailing_moe_v2.py",
    "ling2.py",
    "decoder.py",
    "moe.py",
    "attention.py",
    "hf_causal_lm.py",
    "append_buffer.py",
    "layers.py",
)
ARCHITECTURE = "BailingMoeV2ForCausalLM"
AUTO_MAP = {
    "AutoConfig": "configuration_bailing_moe_v2.BailingMoeV2Config",
    "AutoModelForCausalLM": "modeling_bailing_moe_v2.BailingMoeV2ForCausalLM",
}
WEIGHTS_NAME = "model.safetensors"

# ModelConfig fields that are BailingMoeV2Config keys; the other fields are training knobs or hybrid keys.
HF_KEYS = (
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "head_dim", "hidden_act", "use_qkv_bias", "use_bias", "rms_norm_eps",
    "tie_word_embeddings", "rope_theta", "partial_rotary_factor", "max_position_embeddings", "use_qk_norm",
    "initializer_range", "num_experts", "num_shared_experts", "num_experts_per_tok", "n_group", "topk_group",
    "moe_intermediate_size", "first_k_dense_replace", "routed_scaling_factor", "score_function",
    "moe_router_enable_expert_bias", "router_dtype", "num_nextn_predict_layers", "mtp_loss_scaling_factor",
)  # fmt: skip
# Keys of released configs (and read by vLLM) whose value this architecture fixes; any other value fails.
FIXED_KEYS: dict[str, Any] = {
    "use_rmsnorm": True,
    "norm_topk_prob": True,
    "norm_head": False,
    "rope_scaling": None,
    "embedding_dropout": 0.0,
    "attention_dropout": 0.0,
    "output_dropout": 0.0,
    "use_sliding_window": False,
}
# Bookkeeping keys of a Hugging Face config.json that do not describe the architecture.
INFO_KEYS = frozenset({
    "architectures", "auto_map", "model_type", "torch_dtype", "dtype", "transformers_version", "use_cache",
    "bos_token_id", "eos_token_id", "pad_token_id", "output_router_logits", "rope_parameters",
    "sliding_window", "max_window_layers",  # inert while use_sliding_window is False
})  # fmt: skip


def hf_config_dict(config, dtype: torch.dtype = torch.float32) -> dict[str, Any]:
    """config.json content for a ``ModelConfig`` (or any config with the official attribute names)."""
    data = {key: getattr(config, key) for key in HF_KEYS}
    data.update(FIXED_KEYS)
    data.update(
        architectures=[ARCHITECTURE],
        auto_map=AUTO_MAP,
        model_type="bailing_moe_v2",
        torch_dtype=str(dtype).removeprefix("torch."),
        use_cache=True,
    )
    return data


def model_config_from_hf(data: Mapping[str, Any], base: ModelConfig | None = None) -> ModelConfig:
    """A ``ModelConfig`` from config.json content: architecture keys from ``data`` (official defaults where a
    key is absent), training and hybrid keys from ``base``. Unknown keys and unsupported values fail by name."""
    # Imported here: it pulls in transformers, which nothing else on the training path needs.
    from model.configuration_bailing_moe_v2 import BailingMoeV2Config

    unknown = sorted(set(data) - set(HF_KEYS) - set(FIXED_KEYS) - INFO_KEYS)
    if unknown:
        raise ConfigError(f"unknown config key {unknown[0]} in a Ling-2.0 config.json (known: {', '.join(HF_KEYS)})")
    return config_from_checked_keys(data, base, FIXED_KEYS, ARCHITECTURE, HF_KEYS, BailingMoeV2Config())


def config_from_checked_keys(
    data: Mapping[str, Any],
    base: ModelConfig | None,
    fixed_keys: Mapping[str, Any],
    architecture: str,
    keys: Sequence[str],
    defaults: Any,
) -> ModelConfig:
    """``keys`` from config.json content over ``base`` (``defaults`` where absent, RoPE keys also read from
    ``rope_parameters``), after checking the fixed-value keys, the architecture and plain RoPE."""
    for key, expected in fixed_keys.items():
        if key in data and data[key] != expected:
            raise ConfigError(f"config.json: {key}={data[key]!r} is not supported (only {expected!r})")
    if architecture not in data.get("architectures", [architecture]):
        raise ConfigError(f"config.json: architectures {data['architectures']} do not include {architecture}")
    rope = data.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise ConfigError(f"config.json: rope_parameters {rope} is not plain RoPE")
    values = {key: data.get(key, rope.get(key, getattr(defaults, key))) for key in keys}
    return from_dict(ModelConfig, {**to_dict(base or ModelConfig()), **values})


def checkpoint_state_dict(model: nn.Module, include_mtp: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint under their official names (also what a vLLM weight sync sends).

    Without ``include_mtp`` the MTP layers are left out, as in inclusionAI's released checkpoints: vLLM's
    Ling-2.0 loader has no MTP module and rejects ``model.layers.{L}.*``.
    """
    main_layers = model.config.num_hidden_layers
    state = {}
    for name, tensor in model.state_dict().items():
        if not include_mtp and name.startswith("model.layers.") and int(name.split(".")[2]) >= main_layers:
            continue
        state[name] = tensor.detach().contiguous()
    if model.config.tie_word_embeddings:
        # safetensors stores no aliases; the reader re-ties lm_head to the embeddings.
        state.pop("lm_head.weight")
    return state


def export_hf(model: nn.Module, out_dir: str | Path, include_mtp: bool = False) -> Path:
    """Write ``model`` (``Ling2ForCausalLM`` or ``BailingMoeV2ForCausalLM``) as a Hugging Face checkpoint folder.

    ``include_mtp`` keeps the MTP layers (``model.layers.{L + k}``, read by SGLang and ``load_hf``) for a
    lossless round trip; the default folder is the released layout that vLLM serves.
    """
    config = hf_config_dict(model.config, dtype=model.lm_head.weight.dtype)
    return write_checkpoint_folder(model, out_dir, config, ARCHITECTURE_FILES, include_mtp)


def write_checkpoint_folder(
    model: nn.Module, out_dir: str | Path, config: dict[str, Any], architecture_files: Sequence[str], include_mtp: bool
) -> Path:
    """One checkpoint folder: the weights under their official names, config.json, and the modeling files."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(checkpoint_state_dict(model, include_mtp), str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    if not include_mtp:
        config = {**config, "num_nextn_predict_layers": 0}
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    source_dir = Path(__file__).parent
    for name in architecture_files:
        shutil.copyfile(source_dir / name, out / name)
    return out


def read_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder: one ``model.safetensors`` or the shards its index lists."""
    index = folder / f"{WEIGHTS_NAME}.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else [WEIGHTS_NAME]
    state: dict[str, torch.Tensor] = {}
    for name in files:
        state.update(load_owned(folder / name))
    # Some exporters store the rotary frequencies; they are recomputed here.
    return {k: v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}


def layer_counts(state: Mapping[str, torch.Tensor], config: ModelConfig) -> tuple[int, int]:
    """(main layers, MTP layers) as stored. The reference HF file counts MTP layers inside
    ``num_hidden_layers``, serving engines count them outside, and released checkpoints keep the key but drop
    the MTP weights; the tensors say which case a folder is."""
    layer_ids = {int(k.split(".")[2]) for k in state if k.startswith("model.layers.")}
    mtp_ids = sorted(i for i in layer_ids if f"model.layers.{i}.eh_proj.weight" in state)
    main = len(layer_ids) - len(mtp_ids)
    if sorted(layer_ids) != list(range(len(layer_ids))) or mtp_ids != list(range(main, len(layer_ids))):
        raise ConfigError(f"checkpoint layers {sorted(layer_ids)} (MTP {mtp_ids}) are not main layers then MTP layers")
    if config.num_hidden_layers not in (main, main + len(mtp_ids)):
        raise ConfigError(f"config.json num_hidden_layers={config.num_hidden_layers}, but the weights hold {main}")
    return main, len(mtp_ids)


def load_hf(folder: str | Path, base: ModelConfig | None = None) -> Ling2ForCausalLM:
    """Load a Ling-2.0 checkpoint folder into ``Ling2ForCausalLM`` (tensors keep their stored dtype).

    ``base`` supplies the keys config.json does not carry (training knobs, hybrid shapes)."""
    folder = Path(folder)
    config = model_config_from_hf(json.loads((folder / "config.json").read_text()), base)
    state = read_state_dict(folder)
    main, mtp = layer_counts(state, config)
    config = dataclasses.replace(config, num_hidden_layers=main, num_nextn_predict_layers=mtp)
    return model_from_state(Ling2ForCausalLM, config, state)


def model_from_state(model_class: type[nn.Module], config: ModelConfig, state: dict[str, torch.Tensor]) -> nn.Module:
    """``model_class(config)`` holding ``state`` (tensors keep their dtype), tied embeddings re-tied.

    Built on the meta device and filled by assignment: no throw-away random init at paper scale."""
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["model.word_embeddings.weight"]
    with torch.device("meta"):
        model = model_class(config)
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.word_embeddings.weight
    return model
