"""ReadinessProbe: /readyz's pings run on their own pool, one round at a time, and a
result is reused for a short while, so hammering the endpoint cannot hammer the store
or the directory. Time is the fake reactor's clock."""

from __future__ import annotations

import threading

from twisted.python.threadpool import ThreadPool

from authd.readiness import ReadinessProbe
from tests.fakes import FakeReactor

NOW = 1_767_225_600.0


def test_reports_each_component_and_caches_briefly(pool: ThreadPool) -> None:
    """Each component is ok or the error's type; within the cache time the pings are
    not repeated, after it they are (and see the change)."""
    reactor = FakeReactor(NOW)
    calls: list[str] = []
    down = {"dir": False}

    def ping_dir() -> None:
        calls.append("dir")
        if down["dir"]:
            raise ConnectionError("server at 10.0.0.1 refused; password=secret")

    probe = ReadinessProbe([("store", lambda: calls.append("store")), ("dir", ping_dir)],
                           reactor, pool, ttl=2.0)
    results: list[dict[str, str]] = []
    probe.check().addCallback(results.append)
    reactor.run_until(lambda: len(results) == 1)
    assert results[0] == {"store": "ok", "dir": "ok"}
    down["dir"] = True
    reactor.now += 1.9
    probe.check().addCallback(results.append)
    assert results[1] == {"store": "ok", "dir": "ok"} and len(calls) == 2  # cached
    reactor.now += 0.2
    probe.check().addCallback(results.append)
    reactor.run_until(lambda: len(results) == 3)
    assert results[2] == {"store": "ok", "dir": "error: ConnectionError"}
    assert len(calls) == 4


def test_one_round_at_a_time_while_a_ping_hangs(pool: ThreadPool) -> None:
    """Callers arriving while a round hangs share it: 100 checks, one ping."""
    reactor = FakeReactor(NOW)
    release = threading.Event()
    pings: list[int] = []

    def hung() -> None:
        pings.append(1)
        release.wait(10)  # freed by the test below

    probe = ReadinessProbe([("store", hung)], reactor, pool)
    results: list[dict[str, str]] = []
    for _ in range(100):
        probe.check().addCallback(results.append)
    release.set()
    reactor.run_until(lambda: len(results) == 100)
    assert pings == [1]
    assert all(r == {"store": "ok"} for r in results)
