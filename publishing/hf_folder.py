"""A Hugging Face model folder from a checkpoint folder as the stages export it (``model.export`` /
``model.export_hybrid``): weights re-sharded to ``max_shard_bytes`` with ``model.safetensors.index.json``,
``config.json`` and the architecture files for ``trust_remote_code`` as exported, the tokenizer files, and a
``generation_config.json``.

The weights go through ``huggingface_hub.save_torch_state_dict`` (the Hub's own shard planner and index
format), so what transformers and vLLM expect of a sharded folder is not re-implemented here. The source is
read whole into memory, which fits every profile that runs on one box; a paper-scale checkpoint is already
sharded by its exporter and would be re-sharded tensor by tensor instead.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import save_torch_state_dict

from model.export import ARCHITECTURE, ARCHITECTURE_FILES, read_state_dict
from model.export_hybrid import HYBRID_ARCHITECTURE, HYBRID_ARCHITECTURE_FILES

WEIGHTS_PATTERN = "model{suffix}.safetensors"
INDEX_NAME = "model.safetensors.index.json"
REQUIRED_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
OPTIONAL_TOKENIZER_FILES = ("special_tokens_map.json",)
MODELING_FILES = {ARCHITECTURE: ARCHITECTURE_FILES, HYBRID_ARCHITECTURE: HYBRID_ARCHITECTURE_FILES}


class CheckpointError(ValueError):
    """The source folder is not a complete exported checkpoint; the message names what is missing."""


@dataclass(frozen=True, kw_only=True)
class HfFolder:
    path: Path
    architecture: str
    weight_files: tuple[str, ...]
    tensor_bytes: int
    weights_sha256: str


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order: equal digests, equal weights,
    however the tensors are sharded or whatever loaded them."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def build_hf_folder(
    checkpoint: str | Path, out_dir: str | Path, *, max_shard_bytes: int, max_new_tokens: int
) -> HfFolder:
    """Write the Hugging Face folder of ``checkpoint`` into ``out_dir`` (which must be new or empty)."""
    source, out = Path(checkpoint), Path(out_dir)
    config = _read_config(source)
    architecture = next(a for a in config["architectures"] if a in MODELING_FILES)
    modeling = MODELING_FILES[architecture]
    tokenizer = [name for name in (*REQUIRED_TOKENIZER_FILES, *OPTIONAL_TOKENIZER_FILES) if (source / name).is_file()]
    missing = [name for name in (*modeling, *REQUIRED_TOKENIZER_FILES) if not (source / name).is_file()]
    if missing:
        raise CheckpointError(
            f"{source} lacks {', '.join(missing)}: export it with model.export_checkpoint and copy the curate "
            "stage's tokenizer files beside it, as the training stages do"
        )
    if out.exists() and any(out.iterdir()):
        raise CheckpointError(f"{out} is not empty: build the folder into a new directory")
    out.mkdir(parents=True, exist_ok=True)

    state = read_state_dict(source)
    save_torch_state_dict(state, out, filename_pattern=WEIGHTS_PATTERN, max_shard_size=max_shard_bytes)
    # The architecture files and config.json are copied byte for byte: the code that trained is the code that ships.
    for name in ("config.json", *modeling, *tokenizer):
        shutil.copyfile(source / name, out / name)
    _write_generation_config(out, max_new_tokens=max_new_tokens)

    index = out / INDEX_NAME
    weight_files = (
        tuple(sorted(set(json.loads(index.read_text())["weight_map"].values())))
        if index.exists()
        else (WEIGHTS_PATTERN.format(suffix=""),)
    )
    return HfFolder(
        path=out,
        architecture=architecture,
        weight_files=weight_files,
        tensor_bytes=sum(t.numel() * t.element_size() for t in state.values()),
        weights_sha256=weights_digest(state),
    )


def _read_config(source: Path) -> dict:
    path = source / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{source} has no config.json: pass the checkpoint/ folder a stage exported")
    config = json.loads(path.read_text())
    if not set(config.get("architectures") or ()) & set(MODELING_FILES) or "auto_map" not in config:
        raise CheckpointError(
            f"{path}: architectures {config.get('architectures')} with auto_map {config.get('auto_map')} is not a "
            f"checkpoint of this repository (expected one of {sorted(MODELING_FILES)} with an auto_map)"
        )
    return config


def _write_generation_config(out: Path, *, max_new_tokens: int) -> None:
    """Greedy decoding that stops at the tokenizer's end-of-text token, the way the pipeline evaluates."""
    from tokenizers import Tokenizer
    from transformers import GenerationConfig

    tokenizer = Tokenizer.from_file(str(out / "tokenizer.json"))
    special = json.loads((out / "tokenizer_config.json").read_text())

    def token_id(key: str) -> int | None:
        token = special.get(key)
        # tokenizer_config.json writes a special token as its text or as an AddedToken dict.
        text = token.get("content") if isinstance(token, dict) else token
        return tokenizer.token_to_id(text) if text else None

    eos = token_id("eos_token")
    if eos is None:
        raise CheckpointError(f"{out / 'tokenizer_config.json'} names no eos_token that tokenizer.json knows")
    GenerationConfig(
        bos_token_id=token_id("bos_token"),
        eos_token_id=eos,
        pad_token_id=token_id("pad_token"),
        do_sample=False,
        max_new_tokens=max_new_tokens,
    ).save_pretrained(out)
