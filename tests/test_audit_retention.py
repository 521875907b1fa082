"""`audit.retention`: the daemon's prune timer on an injected clock, its work on a pool
of its own, in bounded batches, and a reload that changes the retention."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet.task import Clock
from twisted.python.threadpool import ThreadPool

from authd.audit_retention import BACKLOG_PAUSE, AuditPruner, prune_until
from authd.config.model import AuditConfig, Config
from authd.core.model import AuditEvent
from tests.fakes import FakeReactor, FakeStore

DAY = 86400.0
NOW = 1_767_225_600.0


class TimerReactor(FakeReactor):
    """FakeReactor plus Clock's timers, so LoopingCall runs on the test's time."""

    def __init__(self, now: float) -> None:
        super().__init__(now)
        self.clock = Clock()
        self.clock.advance(now)

    def seconds(self) -> float:
        return self.clock.seconds()

    def callLater(self, delay: float, f: Any, *args: Any, **kw: Any) -> Any:  # noqa: N802
        return self.clock.callLater(delay, f, *args, **kw)


def _store_with_ages(days_ago: list[float]) -> FakeStore:
    store = FakeStore()
    for age in days_ago:
        store.append_audit(AuditEvent(at=NOW - age * DAY, actor="t", action="auth", result="ok"))
    return store


def test_prune_until_stops_at_a_short_batch_or_the_limit() -> None:
    """Batches run until one comes back short, and never more than `limit` of them."""
    store = _store_with_ages([10.0] * 25)
    assert prune_until(store.prune_audit, NOW, batch=10, limit=2) == 20
    assert prune_until(store.prune_audit, NOW, batch=10, limit=2) == 5
    assert store.audit == []


def test_timer_prunes_old_rows_off_the_reactor_thread(pool: ThreadPool) -> None:
    """At start and every prune_interval, rows older than the retention go (in the pool);
    newer ones stay; stopping leaves no timer behind."""
    reactor = TimerReactor(NOW)
    store = _store_with_ages([500, 401, 399, 1])
    pruner = AuditPruner(AuditConfig(retention=400 * DAY), store.prune_audit, reactor, pool)
    pruner.startService()
    reactor.run_until(lambda: len(store.audit) == 2)
    assert [round((NOW - e.at) / DAY) for e in store.audit] == [399, 1]
    reactor.clock.advance(2 * DAY - 3600)  # the 399-day row is now older than 400 days
    reactor.clock.advance(3600)  # a tick
    reactor.run_until(lambda: len(store.audit) == 1)
    pruner.stopService()
    assert reactor.clock.getDelayedCalls() == []


def test_reload_changes_retention_and_never_keeps_all(pool: ThreadPool) -> None:
    """A reload to `retention: never` stops pruning; back to 30d prunes at the next tick."""
    reactor = TimerReactor(NOW)
    store = _store_with_ages([40, 20])
    pruner = AuditPruner(AuditConfig(retention=None), store.prune_audit, reactor, pool)
    pruner.startService()
    assert pruner.tick() is None and len(store.audit) == 2
    pruner.prepare(replace(Config(), audit=AuditConfig(retention=30 * DAY)))()
    pruner.tick()
    reactor.run_until(lambda: len(store.audit) == 1)
    pruner.stopService()
    assert reactor.clock.getDelayedCalls() == []


def test_a_backlog_drains_in_rounds_a_pause_apart_not_an_interval(pool: ThreadPool) -> None:
    """While a round deletes its whole allowance, the next follows BACKLOG_PAUSE later,
    so a trail written faster than one round per prune_interval deletes still stays
    within its retention; a short round waits for the interval again."""
    reactor = TimerReactor(NOW)
    store = _store_with_ages([500.0] * 65 + [1.0])
    pruner = AuditPruner(AuditConfig(retention=400 * DAY, prune_interval=3600.0),
                         store.prune_audit, reactor, pool, batch=10, batches=2)
    pruner.startService()
    reactor.run_until(lambda: len(store.audit) == 46)  # the first round: 20 rows
    for left in (26, 6, 1):
        reactor.run_until(lambda: len(reactor.clock.getDelayedCalls()) == 2)
        reactor.clock.advance(BACKLOG_PAUSE)
        reactor.run_until(lambda left=left: len(store.audit) == left)  # type: ignore[misc]
    assert reactor.clock.seconds() == NOW + 3 * BACKLOG_PAUSE
    reactor.run_until(lambda: pruner._running is None)
    assert len(reactor.clock.getDelayedCalls()) == 1  # only the interval's timer
    pruner.stopService()
    assert reactor.clock.getDelayedCalls() == []


def test_stopping_cancels_the_next_backlog_round(pool: ThreadPool) -> None:
    """A stop while a backlog drains leaves no timer behind."""
    reactor = TimerReactor(NOW)
    store = _store_with_ages([500.0] * 50)
    pruner = AuditPruner(AuditConfig(retention=400 * DAY), store.prune_audit, reactor, pool,
                         batch=10, batches=2)
    pruner.startService()
    reactor.run_until(lambda: len(reactor.clock.getDelayedCalls()) == 2)
    pruner.stopService()
    assert reactor.clock.getDelayedCalls() == []
