"""Atomic, self-verifying checkpoint directories that resume a run exactly.

Layout of ``<root>/step-000123/`` (``.json`` + ``.safetensors`` pairs are ``state_io`` states):

    manifest.json                 written last: step, layout, size and sha256 of every other file
    model.safetensors             full model weights (gathered under ZeRO-3), written by the main rank
    optimizer-rank{r}.*           rank r's optimizer state (its ZeRO partition, fp32 master included)
    rng-rank{r}.*                 rank r's python / numpy / torch / accelerator RNG states
    scheduler.*                   the engine's schedule position
    data.*                        the data iterator's position (the same on every rank)
    extra.*                       the caller's extra state (loop config, metrics, ...)
    config.json                   engine and optimizer config

Everything is written into ``<root>/step-000123.tmp-XXXX`` and renamed with ``os.replace`` only when
complete, so a run killed at any moment leaves complete checkpoints plus, at worst, a temp dir that
``latest_checkpoint`` ignores and ``prune`` deletes. Loading checks every file a rank reads against the
manifest first; a truncated or modified file raises ``CheckpointCorrupt`` naming it. Nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from safetensors.torch import save_file

from configs.base import to_dict
from configs.training import EngineConfig, OptimConfig
from model.weights_io import load_owned
from training.state_io import load_state, save_state, state_paths

FORMAT = "ling26-checkpoint/1"
MANIFEST = "manifest.json"
MODEL_FILE = "model.safetensors"
_STEP_DIR = re.compile(r"step-(\d+)")
_TMP_MARK = ".tmp-"


class CheckpointEngine(Protocol):
    """What checkpointing needs of a training engine (``training.engine.Engine`` satisfies it). A Protocol, so
    that checkpoint I/O never imports the engines: it sits below them in the import order (the loop and the
    merge import both), and no import has to be deferred to keep the order acyclic."""

    engine_cfg: EngineConfig
    optim_cfg: OptimConfig
    device: torch.device
    rank: int

    @property
    def is_main(self) -> bool: ...

    def layout(self) -> dict[str, Any]: ...

    def full_state_dict(self) -> dict[str, torch.Tensor]: ...

    def load_full_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...

    def optimizer_state_dict(self) -> dict[str, Any]: ...

    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None: ...

    def scheduler_state_dict(self) -> dict[str, Any]: ...

    def load_scheduler_state_dict(self, state: dict[str, Any]) -> None: ...

    def broadcast_object(self, obj: Any) -> Any: ...

    def barrier(self) -> None: ...


class CheckpointCorrupt(RuntimeError):
    """A checkpoint file is missing, truncated or differs from the sha256 its manifest recorded."""


def checkpoint_name(step: int) -> str:
    return f"step-{step:06d}"


def list_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under ``root`` (those with a manifest), oldest step first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = _STEP_DIR.fullmatch(child.name)
        if match and (child / MANIFEST).is_file():
            found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found)]


def latest_checkpoint(root: Path) -> Path | None:
    checkpoints = list_checkpoints(root)
    return checkpoints[-1] if checkpoints else None


def prune(root: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints and any temp dirs of interrupted saves."""
    root = Path(root)
    stale = [p for p in root.iterdir() if _TMP_MARK in p.name and p.is_dir()] if root.is_dir() else []
    complete = list_checkpoints(root)
    doomed = stale + complete[: max(len(complete) - keep, 0)]
    for path in doomed:
        shutil.rmtree(path)
    return doomed


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    """Flush a file or directory to disk, so the rename below never publishes unwritten data."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(path: Path) -> dict[str, Any]:
    manifest_path = Path(path) / MANIFEST
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise CheckpointCorrupt(f"{manifest_path}: missing (not a complete checkpoint)") from err
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointCorrupt(f"{manifest_path}: unreadable ({err})") from err
    if manifest.get("format") != FORMAT:
        raise CheckpointCorrupt(f"{manifest_path}: unknown format {manifest.get('format')!r} (expected {FORMAT})")
    return manifest


def verify(path: Path, names: list[str] | None = None) -> dict[str, Any]:
    """Check ``names`` (default: every file in the manifest) against their size and sha256."""
    path = Path(path)
    manifest = read_manifest(path)
    files = manifest["files"]
    for name in files if names is None else names:
        file = path / name
        if name not in files:
            raise CheckpointCorrupt(f"{file}: not listed in {path / MANIFEST}")
        if not file.is_file():
            raise CheckpointCorrupt(f"{file}: missing")
        size = file.stat().st_size
        if size != files[name]["bytes"]:
            raise CheckpointCorrupt(f"{file}: {size} bytes, the manifest recorded {files[name]['bytes']} (truncated?)")
        digest = _sha256(file)
        if digest != files[name]["sha256"]:
            raise CheckpointCorrupt(f"{file}: sha256 {digest[:12]}… differs from the manifest's (modified or corrupt)")
    return manifest


def _state_files(listed: dict[str, Any], stem: str) -> list[str]:
    """The files of one ``state_io`` state (its tensor file exists only when the state has tensors)."""
    json_path, tensor_path = state_paths(Path(stem))
    return [json_path.name] + ([tensor_path.name] if tensor_path.name in listed else [])


def capture_rng(device: torch.device) -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type != "cpu":
        state["device"] = torch.get_device_module(device.type).get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "device" in state:
        torch.get_device_module(device.type).set_rng_state(state["device"], device)


def save_checkpoint(engine: CheckpointEngine, root: Path, *, step: int, data_state: Any, extra: Any = None) -> Path:
    """Write ``<root>/step-{step:06d}`` atomically. Collective: every rank must call it."""
    root = Path(root)
    final = root / checkpoint_name(step)
    # Captured first, before anything in here could draw a random number.
    rng = capture_rng(engine.device)
    weights = engine.full_state_dict()
    tmp = None
    if engine.is_main:
        root.mkdir(parents=True, exist_ok=True)
        if not final.exists():
            tmp = tempfile.mkdtemp(prefix=final.name + _TMP_MARK, dir=root)
    # Every rank learns the temp dir, or that there is none, so all raise together instead of hanging.
    tmp = engine.broadcast_object(tmp)
    if tmp is None:
        raise FileExistsError(f"{final} already exists; refusing to overwrite a checkpoint")
    tmp = Path(tmp)
    rank = engine.rank
    save_state(engine.optimizer_state_dict(), tmp / f"optimizer-rank{rank}")
    save_state(rng, tmp / f"rng-rank{rank}")
    if engine.is_main:
        save_file(weights, str(tmp / MODEL_FILE), metadata={"format": "pt"})
        save_state(engine.scheduler_state_dict(), tmp / "scheduler")
        save_state(data_state, tmp / "data")
        save_state(extra, tmp / "extra")
        config = {"engine": to_dict(engine.engine_cfg), "optim": to_dict(engine.optim_cfg), **engine.layout()}
        (tmp / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    engine.barrier()
    if engine.is_main:
        files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(tmp.iterdir())}
        manifest = {"format": FORMAT, "step": step, **engine.layout(), "files": files}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        for path in [*tmp.iterdir(), tmp]:
            _fsync(path)
        os.replace(tmp, final)
        _fsync(root)
    engine.barrier()
    return final


def load_checkpoint(engine: CheckpointEngine, path: Path) -> tuple[int, Any, Any]:
    """Restore weights, optimizer, schedule and RNG into ``engine``; returns ``(step, data_state, extra)``.

    The checkpoint must come from the same layout (world size, ZeRO stage, precision): optimizer
    partitions are per rank. To start a different layout from it, load only the weights with
    :func:`load_model_weights`.
    """
    path = Path(path)
    manifest = read_manifest(path)
    mine = engine.layout()
    theirs = {key: manifest[key] for key in mine}
    if theirs != mine:
        raise ValueError(f"{path} was written by a run with {theirs}; this engine has {mine}")
    rank = engine.rank
    stems = [f"optimizer-rank{rank}", f"rng-rank{rank}", "scheduler", "data", "extra"]
    verify(path, [MODEL_FILE] + [name for stem in stems for name in _state_files(manifest["files"], stem)])
    engine.load_full_state_dict(load_owned(path / MODEL_FILE))
    engine.load_optimizer_state_dict(load_state(path / f"optimizer-rank{rank}"))
    engine.load_scheduler_state_dict(load_state(path / "scheduler"))
    data_state, extra = load_state(path / "data"), load_state(path / "extra")
    # Last, so that nothing above disturbs the restored streams.
    restore_rng(load_state(path / f"rng-rank{rank}"), engine.device)
    return manifest["step"], data_state, extra


def load_model_weights(path: Path) -> dict[str, torch.Tensor]:
    """The full model weights of a checkpoint, verified against its manifest."""
    verify(path, [MODEL_FILE])
    return load_owned(Path(path) / MODEL_FILE)
