"""The asynchronous RL run's checkpoint: one atomic folder per step, nothing pickled.

Layout of ``<root>/step-000012/`` (the manifest format of ``training.checkpoint``, so ``latest``, ``prune``
and ``verify`` are shared with the training loop's checkpoints):

    manifest.json         written last: step and the size + sha256 of every other file
    scheduler.json        version, prompt cursor, groups in flight and finished, staleness counts,
                          version registry, prompts trained per step, per-step metrics
    trainer.json / .safetensors   the trainer's state (``training.state_io``: weights, optimizer, ...)

Written into ``step-000012.tmp-XXXX`` and renamed when complete; a run killed mid-write leaves a temp
folder that ``latest`` ignores and the next ``save`` prunes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from training.checkpoint import FORMAT, MANIFEST, checkpoint_name, latest_checkpoint, prune, verify
from training.state_io import load_state, save_state

SCHEDULER_FILE = "scheduler.json"
TRAINER_STEM = "trainer"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(root: Path, step: int, scheduler_state: dict[str, Any], trainer_state: Any, *, keep: int) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = root / checkpoint_name(step)
    if final.exists():
        raise FileExistsError(f"{final} already exists; refusing to overwrite a checkpoint")
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=root))
    (tmp / SCHEDULER_FILE).write_text(json.dumps(scheduler_state), encoding="utf-8")
    save_state(trainer_state, tmp / TRAINER_STEM)
    files = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in sorted(tmp.iterdir())}
    manifest = {"format": FORMAT, "step": step, "kind": "async-rl", "files": files}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    for path in [*tmp.iterdir(), tmp]:
        _fsync(path)
    os.replace(tmp, final)
    _fsync(root)
    prune(root, keep)
    return final


def latest(root: Path) -> Path | None:
    return latest_checkpoint(Path(root))


def load(path: Path) -> tuple[dict[str, Any], Any]:
    """``(scheduler_state, trainer_state)`` after checking every file against the manifest."""
    verify(path)
    scheduler_state = json.loads((Path(path) / SCHEDULER_FILE).read_text(encoding="utf-8"))
    return scheduler_state, load_state(Path(path) / TRAINER_STEM)
