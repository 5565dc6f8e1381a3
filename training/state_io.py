"""Nested training state on disk without pickle: tensors in safetensors, the skeleton in JSON.

A state is any nesting of dict, list, tuple, str, int, float, bool, None, ``torch.Tensor`` and
``np.ndarray`` — optimizer state dicts (DeepSpeed ZeRO partitions included), RNG states, data cursors.
``save_state(state, stem)`` writes ``stem.json`` (the skeleton) and, when the state holds tensors,
``stem.safetensors``; ``load_state(stem)`` rebuilds an equal state. The round trip is exact: tensors
bit for bit, floats bit for bit (non-finite ones as their IEEE bit pattern), tuples stay tuples, dict
keys keep their type and order. What it does not keep: tensor aliasing (two references to one tensor
come back as two tensors), devices (everything loads on CPU), ``requires_grad`` and dict subclasses
(an ``OrderedDict`` comes back as a ``dict``).

Skeleton encoding: JSON scalars and lists as themselves; a dict whose keys are all strings not starting
with ``"__"`` as a JSON object; everything else as a one-key object whose key is a tag below.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from model.weights_io import load_owned

FORMAT = "ling26-state/1"
_TENSOR = "__tensor__"
_NDARRAY = "__ndarray__"
_TUPLE = "__tuple__"
_DICT = "__dict__"
_FLOAT = "__float__"
_KEY_TYPES = (str, int, float, bool, type(None), tuple)


def encode(state: Any) -> tuple[Any, dict[str, torch.Tensor]]:
    """Split ``state`` into a JSON-able skeleton and the tensors it references (CPU, contiguous)."""
    tensors: dict[str, torch.Tensor] = {}
    storages: set[int] = set()

    def own(t: torch.Tensor, path: str) -> str:
        if t.layout != torch.strided or t.device.type == "meta":
            raise TypeError(f"{path}: cannot store a {t.layout} tensor on {t.device}")
        t = t.detach().to("cpu").contiguous()
        ptr = t.untyped_storage().data_ptr()
        # safetensors refuses tensors that share memory; a copy costs little and keeps each entry whole.
        if t.numel() and ptr in storages:
            t = t.clone()
        storages.add(t.untyped_storage().data_ptr())
        key = f"t{len(tensors)}"
        tensors[key] = t
        return key

    def enc(obj: Any, path: str) -> Any:
        if obj is None or isinstance(obj, (bool, str, int)):
            return obj
        if isinstance(obj, float):
            return obj if math.isfinite(obj) else {_FLOAT: struct.pack(">d", obj).hex()}
        if isinstance(obj, torch.Tensor):
            return {_TENSOR: own(obj, path)}
        if isinstance(obj, np.ndarray):
            if obj.dtype.hasobject or not obj.dtype.isnative:
                raise TypeError(f"{path}: cannot store a numpy array of dtype {obj.dtype}")
            # Not np.ascontiguousarray: it turns 0-d arrays into 1-d ones.
            return {_NDARRAY: own(torch.from_numpy(obj if obj.flags.c_contiguous else obj.copy(order="C")), path)}
        # Exact types only: a namedtuple or list subclass would silently come back as its base class.
        if type(obj) is tuple:
            return {_TUPLE: [enc(v, f"{path}[{i}]") for i, v in enumerate(obj)]}
        if type(obj) is list:
            return [enc(v, f"{path}[{i}]") for i, v in enumerate(obj)]
        if isinstance(obj, dict):
            if all(isinstance(k, str) and not k.startswith("__") for k in obj):
                return {k: enc(v, f"{path}[{k!r}]") for k, v in obj.items()}
            items = []
            for k, v in obj.items():
                if not isinstance(k, _KEY_TYPES):
                    raise TypeError(f"{path}: cannot store a dict key of type {type(k).__qualname__}")
                items.append([enc(k, f"{path}.key({k!r})"), enc(v, f"{path}[{k!r}]")])
            return {_DICT: items}
        raise TypeError(f"{path}: cannot store {type(obj).__module__}.{type(obj).__qualname__} without pickle")

    return enc(state, "state"), tensors


def decode(skeleton: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode`."""

    def dec(node: Any) -> Any:
        if isinstance(node, list):
            return [dec(v) for v in node]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((tag, value),) = node.items()
            if tag == _TENSOR:
                return tensors[value]
            if tag == _NDARRAY:
                return tensors[value].numpy()
            if tag == _TUPLE:
                return tuple(dec(v) for v in value)
            if tag == _DICT:
                return {dec(k): dec(v) for k, v in value}
            if tag == _FLOAT:
                return struct.unpack(">d", bytes.fromhex(value))[0]
        return {k: dec(v) for k, v in node.items()}

    return dec(skeleton)


def state_paths(stem: Path) -> tuple[Path, Path]:
    """The skeleton and tensor files of the state stored under ``stem``."""
    stem = Path(stem)
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".safetensors")


def save_state(state: Any, stem: Path) -> list[Path]:
    """Write ``state`` under ``stem`` (``stem.json`` [+ ``stem.safetensors``]); returns the files written."""
    skeleton, tensors = encode(state)
    json_path, tensor_path = state_paths(stem)
    written = []
    if tensors:
        save_file(tensors, str(tensor_path))
        written.append(tensor_path)
    doc = {"format": FORMAT, "tensors": tensor_path.name if tensors else None, "state": skeleton}
    # ensure_ascii keeps lone surrogates and other odd strings exact; allow_nan=False because JSON has no NaN.
    json_path.write_text(json.dumps(doc, ensure_ascii=True, allow_nan=False), encoding="ascii")
    written.append(json_path)
    return written


def load_state(stem: Path) -> Any:
    """Read the state stored under ``stem`` by :func:`save_state`."""
    json_path, _ = state_paths(stem)
    doc = json.loads(json_path.read_text(encoding="ascii"))
    if doc.get("format") != FORMAT:
        raise ValueError(f"{json_path}: unknown state format {doc.get('format')!r} (expected {FORMAT})")
    tensors = load_owned(json_path.with_name(doc["tensors"])) if doc["tensors"] else {}
    return decode(doc["state"], tensors)
