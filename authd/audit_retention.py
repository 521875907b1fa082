"""`audit.retention`: the daemon deletes audit rows older than the retention, a little
at a time, off the reactor thread.

A reactor timer fires every `audit.prune_interval`; the prune itself runs on a pool of
its own (one thread), in batches of `BATCH` rows, each its own short transaction found
by the `at` index, so a decision waits for one batch's DELETE at most and nothing scans
the trail at decision time. One round deletes at most `MAX_BATCHES` batches; while
rounds come back full (a first start on a years-old trail, or more rows written per
interval than a round deletes) the next one follows `BACKLOG_PAUSE` later instead of
a whole interval later, so the trail stays within its retention whatever the rate of
sign-ins. Only the main process prunes (workers share its store).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.task import LoopingCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from authd.config.model import AuditConfig, Config

log = Logger(namespace="authd.audit_retention")

BATCH = 1000
MAX_BATCHES = 100  # rows per round at most: BATCH * MAX_BATCHES
BACKLOG_PAUSE = 1.0  # seconds between two rounds while a backlog drains

Prune = Callable[[float, int], int]  # Store.prune_audit(before, batch) -> rows deleted


def prune_until(prune: Prune, before: float, batch: int = BATCH, limit: int = MAX_BATCHES) -> int:
    """Delete rows older than `before`, batch by batch, until a batch comes back short or
    `limit` batches ran; returns how many rows went."""
    total = 0
    for _ in range(limit):
        deleted = prune(before, batch)
        total += deleted
        if deleted < batch:
            break
    return total


class AuditPruner:
    """The timer and its prune; `prepare` takes a new retention on reload."""

    def __init__(
        self,
        config: AuditConfig,
        prune: Prune,
        reactor: Any,
        pool: ThreadPool,
        *,
        batch: int = BATCH,
        batches: int = MAX_BATCHES,
    ) -> None:
        self._config = config
        self._prune = prune
        self._reactor = reactor
        self._pool = pool
        self._batch = batch
        self._batches = batches
        self._loop: LoopingCall | None = None
        self._running: Deferred[int] | None = None
        self._next_round: Any = None  # IDelayedCall while a backlog drains

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        self._start(self._config.prune_interval)

    def _start(self, interval: float) -> None:
        loop = LoopingCall(self.tick)
        loop.clock = self._reactor
        self._loop = loop
        loop.start(interval, now=True)

    def stopService(self) -> Deferred[int] | None:  # noqa: N802
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._next_round is not None and self._next_round.active():
            self._next_round.cancel()
        self._next_round = None
        return self._running  # a stop waits for the batch in flight

    def prepare(self, config: Config) -> Callable[[], None]:
        new = config.audit

        def commit() -> None:
            interval_changed = new.prune_interval != self._config.prune_interval
            self._config = new
            if interval_changed and self._loop is not None:
                self._loop.stop()
                self._start(new.prune_interval)

        return commit

    def _backlog(self) -> None:
        self._next_round = None
        self.tick()

    def tick(self) -> Deferred[int] | None:
        """One prune round in the pool; skipped while the previous one still runs."""
        retention = self._config.retention
        if retention is None or self._running is not None:
            return None
        before = self._reactor.seconds() - retention
        d: Deferred[int] = deferToThreadPool(
            self._reactor, self._pool, prune_until, self._prune, before, self._batch,
            self._batches,
        )
        self._running = d

        def done(count: int) -> int:
            self._running = None
            if count:
                log.info("audit: pruned {count} rows older than the retention", count=count)
            if count >= self._batch * self._batches and self._loop is not None:
                self._next_round = self._reactor.callLater(BACKLOG_PAUSE, self._backlog)
            return count

        def failed(failure: Failure) -> int:
            self._running = None
            # The store's errors name their class only; the next tick tries again.
            log.warn("audit prune failed: {error}", error=failure.type.__name__)
            return 0

        return d.addCallbacks(done, failed)
