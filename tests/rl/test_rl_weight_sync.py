"""Weight sync protocol: checksums on both sides, atomic disk versions, and every failure (bad weights,
corrupt transport, engine-side mismatch, deadline) leaves the engine on its old version and weights."""

import threading
import time

import pytest
import torch
from torch import nn

from inference.weight_sync import (
    DiskBackend,
    InProcessBackend,
    SyncTimeout,
    UnknownPolicyVersion,
    VersionedEngine,
    WeightSync,
    WeightSyncError,
    read_version,
    state_checksum,
    version_dir,
)


class Probe(nn.Module):
    def __init__(self, value=0.0):
        super().__init__()
        self.w = nn.Parameter(torch.full((3, 4), value))
        self.register_buffer("b", torch.arange(4.0))


class ProbeEngine:
    """``generate`` reads the weights twice with a pause between: a swap in the middle would show."""

    def __init__(self, module, pause=0.0):
        self.module, self.pause = module, pause

    def generate(self, prompts, params):
        first = float(self.module.w[0, 0].detach())
        time.sleep(self.pause)
        return [(first, float(self.module.w[0, 0].detach()))]


def state(value):
    return Probe(value).state_dict()


def setup(backend_cls=InProcessBackend, timeout_s=10.0, **kwargs):
    engine_model = Probe(-1.0)
    engine = VersionedEngine(ProbeEngine(engine_model))
    sync = WeightSync(engine, backend_cls(engine_model, **kwargs), timeout_s=timeout_s)
    sync.push(state(0.0), 0)
    return engine_model, engine, sync


def test_checksum_sees_every_bit_name_dtype_and_shape_but_not_order():
    base = {"a": torch.randn(3, 4), "b": torch.arange(5)}
    same = dict(reversed(list(base.items())))
    assert state_checksum(base) == state_checksum(same)
    flipped = base["a"].clone()
    flipped.view(torch.int32)[1, 2] ^= 1
    variants = [
        {**base, "a": flipped},
        {"a2": base["a"], "b": base["b"]},
        {**base, "a": base["a"].double()},
        {**base, "a": base["a"].reshape(4, 3)},
        {**base, "a": base["a"].bfloat16()},
    ]
    assert len({state_checksum(v) for v in [base, *variants]}) == len(variants) + 1


@pytest.mark.parametrize("backend", ["in_process", "disk"])
def test_push_loads_verifies_and_registers_the_version(backend, tmp_path):
    kwargs = {"root": tmp_path} if backend == "disk" else {}
    model, engine, sync = setup(DiskBackend if backend == "disk" else InProcessBackend, **kwargs)
    receipt = sync.push(state(1.5), 1)
    assert engine.version == 1 and receipt.version == 1
    assert bool((model.w == 1.5).all())
    assert sync.registry == {0: state_checksum(state(0.0)), 1: receipt.checksum}
    version, outputs = engine.generate(["x"], None)
    assert version == 1 and outputs == [(1.5, 1.5)]
    if backend == "disk":
        for v in (2, 3):
            sync.push(state(float(v)), v)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["v-000002", "v-000003"]  # keeps the last two
        assert read_version(version_dir(tmp_path, 3))[:2] == (3, state_checksum(state(3.0)))


def assert_still_on(engine, model, version, value):
    # Generation first: it waits for any load or rollback still holding the engine.
    assert engine.generate(["x"], None) == (version, [(value, value)])
    assert engine.version == version and bool((model.w == value).all())


def test_weights_the_engine_cannot_load_leave_it_on_the_old_version():
    model, engine, sync = setup()
    with pytest.raises(WeightSyncError, match="stays on version 0"):
        sync.push({"w": torch.ones(3, 4)}, 1)  # the buffer is missing: strict load fails
    assert_still_on(engine, model, 0, 0.0)
    assert 1 not in sync.registry


def test_a_file_corrupted_in_transit_is_refused(tmp_path):
    class Corrupting(DiskBackend):
        def send(self, version, state, checksum, cancelled):
            path = super().send(version, state, checksum, cancelled)
            raw = bytearray((path / "model.safetensors").read_bytes())
            raw[-3] ^= 0xFF
            (path / "model.safetensors").write_bytes(bytes(raw))
            return path

    model, engine, sync = setup(DiskBackend, root=tmp_path)
    sync.backend = Corrupting(model, tmp_path)
    with pytest.raises(WeightSyncError, match="sha256 differs"):
        sync.push(state(2.0), 1)
    assert_still_on(engine, model, 0, 0.0)


def test_an_engine_side_checksum_mismatch_restores_the_old_weights():
    class Drifting(InProcessBackend):
        def apply(self, delivery):
            super().apply(delivery)
            with torch.no_grad():
                self.module.w[0, 0] += 1e-3  # e.g. a lossy cast on the engine side
            return state_checksum(self.module.state_dict())

    model, engine, sync = setup()
    sync.backend = Drifting(model)
    with pytest.raises(WeightSyncError, match="engine-side checksum"):
        sync.push(state(2.0), 1)
    assert_still_on(engine, model, 0, 0.0)


def test_a_slow_transport_times_out_and_the_engine_never_takes_the_late_weights():
    release = threading.Event()

    class Stuck(InProcessBackend):
        def send(self, version, state, checksum, cancelled):
            release.wait(5)
            return super().send(version, state, checksum, cancelled)

    model, engine, sync = setup(timeout_s=0.2)
    sync.backend = Stuck(model)
    start = time.perf_counter()
    with pytest.raises(SyncTimeout, match="stays on version 0"):
        sync.push(state(3.0), 1)
    assert time.perf_counter() - start < 2
    release.set()  # the transfer finishes late: it must see the cancellation and not commit
    time.sleep(0.2)
    assert_still_on(engine, model, 0, 0.0)
    sync.backend = InProcessBackend(model)
    sync.push(state(3.0), 1)  # the same version can be retried
    assert_still_on(engine, model, 1, 3.0)


def test_a_timeout_during_the_load_rolls_it_back():
    class SlowLoad(InProcessBackend):
        def apply(self, delivery):
            checksum = super().apply(delivery)
            time.sleep(0.5)
            return checksum

    model, engine, sync = setup(timeout_s=0.1)
    sync.backend = SlowLoad(model)
    with pytest.raises(SyncTimeout):
        sync.push(state(4.0), 1)
    # Generation waits for the load to finish and be undone; it never sees the new weights.
    assert_still_on(engine, model, 0, 0.0)


def test_versions_go_forward_and_a_resync_needs_the_same_weights():
    model, engine, sync = setup()
    sync.push(state(1.0), 1)
    sync.push(state(1.0), 1)  # a restarted engine gets the same version again
    with pytest.raises(WeightSyncError, match="not newer"):
        sync.push(state(2.0), 1)
    with pytest.raises(WeightSyncError, match="not newer"):
        sync.push(state(0.5), 0)
    assert_still_on(engine, model, 1, 1.0)


def test_rollouts_carry_their_version_and_unknown_versions_are_refused():
    engine = VersionedEngine(ProbeEngine(Probe()))
    with pytest.raises(UnknownPolicyVersion, match="no pushed weights"):
        engine.generate(["x"], None)
    _, _, sync = setup()
    sync.push(state(1.0), 1)
    sync.require_known([0, 1, 1])
    with pytest.raises(UnknownPolicyVersion, match=r"\[2, None\]"):
        sync.require_known([0, 2, None])
    restarted = WeightSync(VersionedEngine(ProbeEngine(Probe())), InProcessBackend(Probe()), timeout_s=1)
    restarted.restore_registry({str(v): c for v, c in sync.registry.items()})
    restarted.require_known([0, 1])


def test_generation_never_straddles_a_push():
    model = Probe(-1.0)
    engine = VersionedEngine(ProbeEngine(model, pause=0.002))
    sync = WeightSync(engine, InProcessBackend(model), timeout_s=10)
    sync.push(state(0.0), 0)
    seen, stop = [], threading.Event()

    def generate():
        while not stop.is_set():
            seen.append(engine.generate(["x"], None))

    threads = [threading.Thread(target=generate) for _ in range(3)]
    for t in threads:
        t.start()
    for v in range(1, 30):
        sync.push(state(float(v)), v)
    stop.set()
    for t in threads:
        t.join()
    assert len(seen) > 10 and len({v for v, _ in seen}) > 3
    for version, [(first, second)] in seen:
        assert first == second == float(version)
