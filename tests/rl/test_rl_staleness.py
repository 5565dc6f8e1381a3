"""StalenessManager: each term of the admission formula binds when it should, and concurrent workers never
admit past it."""

import threading
import time

import pytest

from training.rl.staleness import StalenessCounts, StalenessManager


def admit_all(manager):
    n = 0
    while manager.try_admit():
        n += 1
    return n


def test_eta_zero_is_synchronous():
    m = StalenessManager(max_staleness=0, batch_size=4, max_concurrent=100)
    assert m.capacity() == 4 and admit_all(m) == 4
    for _ in range(4):
        m.on_accepted()
    # Finished but not yet consumed by an update: still no room until the version moves.
    assert m.capacity() == 0
    m.set_version(1)
    assert admit_all(m) == 4 and m.counts == StalenessCounts(version=1, running=4, accepted=4)


@pytest.mark.parametrize("eta", [1, 2, 4])
def test_generation_runs_eta_batches_ahead(eta):
    m = StalenessManager(max_staleness=eta, batch_size=3, max_concurrent=100)
    assert admit_all(m) == (eta + 1) * 3
    for version in range(1, 4):
        m.set_version(version)
        assert admit_all(m) == 3  # each update opens exactly one more batch


def test_max_concurrent_binds_before_staleness():
    m = StalenessManager(max_staleness=8, batch_size=4, max_concurrent=5)
    assert admit_all(m) == 5
    m.on_accepted()
    m.on_accepted()
    assert m.capacity() == 2  # two finished: room for two more in flight, far below the staleness bound


def test_capacity_formula_at_arbitrary_counts():
    for version, running, accepted, rejected in [(0, 0, 0, 0), (3, 2, 9, 5), (1, 7, 1, 0), (5, 0, 30, 2)]:
        counts = StalenessCounts(version=version, running=running, accepted=accepted, rejected=rejected)
        m = StalenessManager(max_staleness=2, batch_size=4, max_concurrent=8, counts=counts)
        expected = max(0, min(8 - running, (2 + version + 1) * 4 - (accepted + running)))
        assert m.capacity() == expected


def test_rejected_rollouts_free_their_slot():
    m = StalenessManager(max_staleness=0, batch_size=2, max_concurrent=10)
    assert admit_all(m) == 2
    m.on_rejected()
    assert m.capacity() == 1 and m.counts.rejected == 1


def test_misuse_raises():
    with pytest.raises(ValueError):
        StalenessManager(max_staleness=-1, batch_size=1, max_concurrent=1)
    m = StalenessManager(max_staleness=0, batch_size=1, max_concurrent=1)
    with pytest.raises(RuntimeError, match="none is running"):
        m.on_accepted()
    m.set_version(2)
    with pytest.raises(ValueError, match="went back"):
        m.set_version(1)


def test_concurrent_workers_never_admit_past_the_bound():
    eta, batch, versions, workers = 2, 5, 30, 8
    m = StalenessManager(max_staleness=eta, batch_size=batch, max_concurrent=12)
    admitted, violations, lock = [], [], threading.Lock()
    stop = threading.Event()

    def worker():
        while not stop.is_set():
            if not m.try_admit():
                continue
            c = m.counts
            if c.running > 12 or c.accepted + c.running > (eta + c.version + 1) * batch:
                violations.append(c)
            with lock:
                admitted.append(1)
            m.on_accepted()

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    for t in threads:
        t.start()
    for version in range(1, versions + 1):
        # The trainer moves on once a batch per version has been accepted.
        while m.counts.accepted < version * batch:
            pass
        m.set_version(version)
    bound = (eta + versions + 1) * batch
    while m.counts.accepted < bound:
        pass
    time.sleep(0.05)  # workers keep trying for a while: none may get past the bound
    stop.set()
    for t in threads:
        t.join()
    final = m.counts
    assert not violations
    assert final.running == 0 and final.accepted == len(admitted)
    assert final.accepted == bound  # reached exactly, never passed
