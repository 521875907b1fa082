"""auth/threaded.py: one hop into a real ThreadPool, metrics on the way back, fail closed.

The reactor is a hand-written fake (tests.fakes.FakeReactor): worker threads hand results
back through callFromThread and the test drains them with a short deadline, no sleeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.logger import globalLogPublisher
from twisted.python.threadpool import ThreadPool

from authd.auth.interfaces import Decision, Outcome, Reason
from authd.auth.threaded import ThreadedEngine
from authd.metrics import Metrics
from tests.auth.conftest import NOW, PASSWORD, World
from tests.fakes import FakeReactor

DEADLINE = 5.0


@pytest.fixture
def pool() -> Iterator[ThreadPool]:
    p = ThreadPool(minthreads=1, maxthreads=2, name="auth-test")
    p.start()
    yield p
    p.stop()


def run(
    reactor: FakeReactor, threaded: ThreadedEngine, world: World, typed: str, **kw: Any
) -> Decision:
    results: list[Decision] = []
    threaded.authenticate(world.request(typed, **kw)).addCallback(results.append)
    reactor.run_until(lambda: bool(results), timeout=DEADLINE)
    return results[0]


def sample(metrics: Metrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


def test_authenticate_runs_in_pool_and_counts(fake_world: World, pool: ThreadPool) -> None:
    """A decision made in the pool at the reactor's time arrives through the Deferred;
    requests, store latency and in-flight metrics are recorded."""
    w = fake_world
    w.user()
    tok = w.token()
    reactor, metrics = FakeReactor(NOW), Metrics()
    threaded = ThreadedEngine(w.engine(), reactor, pool, metrics)
    d = run(reactor, threaded, w, PASSWORD + w.code(tok))
    assert (d.outcome, d.reason) == (Outcome.ACCEPT, Reason.OK)
    labels = {"frontend": "radius", "result": "accept", "reason": "ok"}
    assert sample(metrics, "authd_requests_total", labels) == 1
    assert sample(metrics, "authd_store_seconds_count") == 1
    assert sample(metrics, "authd_requests_in_flight", {"frontend": "radius"}) == 0


def test_lockout_metric(fake_world: World, pool: ThreadPool) -> None:
    """The failure that locks a user bumps authd_lockouts_total once."""
    w = fake_world
    w.set("otp.lockout.max_attempts", 2)
    w.user()
    w.token()
    reactor, metrics = FakeReactor(NOW), Metrics()
    threaded = ThreadedEngine(w.engine(), reactor, pool, metrics)
    for _ in range(3):
        run(reactor, threaded, w, PASSWORD + "000000")
    assert sample(metrics, "authd_lockouts_total") == 1


def test_unexpected_error_becomes_logged_reject(fake_world: World, pool: ThreadPool) -> None:
    """A store failure is a BACKEND_DOWN reject with a logged traceback that names no
    secret; the Deferred never fails."""
    w = fake_world
    w.user()
    w.store.down = True  # type: ignore[attr-defined]
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        reactor, metrics = FakeReactor(NOW), Metrics()
        threaded = ThreadedEngine(w.engine(), reactor, pool, metrics)
        d = run(reactor, threaded, w, PASSWORD + "424242")
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert (d.outcome, d.reason, d.message) == (
        Outcome.REJECT,
        Reason.BACKEND_DOWN,
        "Authentication failed",
    )
    failures = [e for e in events if "log_failure" in e]
    assert len(failures) == 1
    text = repr(failures[0]) + failures[0]["log_failure"].getTraceback()
    assert "StoreUnavailable" in text
    assert PASSWORD not in text and "424242" not in text
    labels = {"frontend": "radius", "result": "reject", "reason": "backend_down"}
    assert sample(metrics, "authd_requests_total", labels) == 1


def test_unknown_frontend_label(fake_world: World, pool: ThreadPool) -> None:
    """Metric labels stay in a fixed set: an unexpected front-end name is `other`."""
    w = fake_world
    reactor, metrics = FakeReactor(NOW), Metrics()
    threaded = ThreadedEngine(w.engine(), reactor, pool, metrics)
    run(reactor, threaded, w, "pw", frontend="carrier-pigeon")
    labels = {"frontend": "other", "result": "reject", "reason": "unknown_user"}
    assert sample(metrics, "authd_requests_total", labels) == 1


def test_check_ready(fake_world: World, pool: ThreadPool) -> None:
    """check_ready pings the store and every backend in the pool and reports each."""
    w = fake_world
    reactor = FakeReactor(NOW)
    threaded = ThreadedEngine(w.engine(), reactor, pool, Metrics())
    results: list[dict[str, str]] = []
    threaded.check_ready().addCallback(results.append)
    reactor.run_until(lambda: bool(results), timeout=DEADLINE)
    assert results[0] == {"store": "ok", "dir": "ok"}
    w.directory.unreachable = True
    threaded.check_ready().addCallback(results.append)
    reactor.run_until(lambda: len(results) == 2, timeout=DEADLINE)
    assert results[1] == {"store": "ok", "dir": "error: ConnectionError"}
