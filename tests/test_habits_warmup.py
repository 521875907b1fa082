"""At start the unusual sign-in habits learn the last 30 days of accepts from the audit
trail (a restart does not put users back into learning), on the audit pool, flagging
and counting nothing while they do."""

from __future__ import annotations

from twisted.python.threadpool import ThreadPool

from authd.config.model import Config
from authd.core.habits import SigninHabits
from authd.core.model import AuditEvent
from authd.habits_warmup import HabitsWarmup, warm_up
from tests.fakes import FakeReactor, FakeStore

NOW = 1_767_258_000.0  # 09:00 UTC
DAY = 86400.0


def _accept(at: float, source: str = "192.0.2.7", result: str = "accept") -> AuditEvent:
    return AuditEvent(at=at, actor="radius:vpn", action="auth", result=result, user="alice",
                      client="vpn", source=source)  # fmt: skip


def test_warm_up_learns_recent_accepts_only(pool: ThreadPool) -> None:
    """Five accepts from 192.0.2.x within 30 days are learned (a sixth from there is
    usual, one from elsewhere is flagged); older accepts and rejects are not learned."""
    store = FakeStore()
    store.append_audit(_accept(NOW - 40 * DAY, source="198.51.100.1"))  # too old
    store.append_audit(_accept(NOW - DAY, source="203.0.113.1", result="reject"))
    for i in range(5):
        store.append_audit(_accept(NOW - i * DAY))
    counted: list[str] = []
    habits = SigninHabits(on_flag=counted.append)
    reactor = FakeReactor(NOW)
    warmup = HabitsWarmup(Config(), habits, store.export_audit, reactor, pool)
    warmup.startService()
    done: list[int] = []
    assert warmup.done is not None
    warmup.done.addCallback(done.append)
    reactor.run_until(lambda: bool(done))
    assert done == [5] and counted == []
    assert habits.observe("alice", "192.0.2.99", "vpn", NOW, 5) == ()
    assert habits.observe("alice", "198.51.100.1", "vpn", NOW, 5) == ("network",)
    assert habits.observe("alice", "203.0.113.1", "vpn", NOW, 5) == ("network",)


def test_warm_up_is_bounded() -> None:
    """However long the trail, at most `max_rows` rows are read, a page at a time."""
    store = FakeStore()
    for i in range(2500):
        store.append_audit(_accept(NOW - i))
    habits = SigninHabits()
    assert warm_up(habits, store.export_audit, NOW - DAY, max_rows=2000) == 2000
    assert warm_up(habits, store.export_audit, NOW - DAY) == 2500
