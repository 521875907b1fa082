"""At start, teach the unusual sign-in habits (authd/core/habits.py) the last
`WARMUP_DAYS` of accepted sign-ins from the audit trail, so that a restart does not put
every user back into learning. Runs once, on the audit pool, a page at a time; live
sign-ins meanwhile are observed as usual (a user not yet warmed is still learning,
so nothing is flagged wrongly, only possibly missed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from authd.auth.interfaces import AuditFilter
from authd.config.model import Config
from authd.core.habits import SigninHabits
from authd.core.model import AuditEvent

log = Logger(namespace="authd.habits_warmup")

WARMUP_DAYS = 30
MAX_ROWS = 1_000_000  # an upper bound on the start-up read, whatever the trail holds
PAGE = 1000

Export = Callable[[AuditFilter, int, int], list[AuditEvent]]  # Store.export_audit


def warm_up(habits: SigninHabits, export: Export, since: float, max_rows: int = MAX_ROWS) -> int:
    """Feed accepted sign-ins since `since` to `habits`, oldest first; returns how many."""
    where = AuditFilter(action="auth", result="accept", since=since)
    after, count = 0, 0
    while count < max_rows:
        page = export(where, after, PAGE)
        for e in page:
            if e.user:
                habits.learn(e.user, e.source, e.client, e.at)
        count += len(page)
        if len(page) < PAGE:
            break
        after = page[-1].id or 0
    return count


class HabitsWarmup:
    """A start-time task in AuthdService's listener order (nothing to bind or drain)."""

    def __init__(
        self, config: Config, habits: SigninHabits, export: Export, reactor: Any, pool: ThreadPool
    ) -> None:
        self._config = config
        self._habits = habits
        self._export = export
        self._reactor = reactor
        self._pool = pool
        self.done: Deferred[int] | None = None

    def startService(self) -> None:  # noqa: N802 (Twisted's name)
        if not self._config.audit.unusual_signin.enabled:
            return
        since = self._reactor.seconds() - WARMUP_DAYS * 86400.0
        d: Deferred[int] = deferToThreadPool(
            self._reactor, self._pool, warm_up, self._habits, self._export, since
        )

        def failed(failure: Failure) -> int:
            log.warn("unusual sign-in: could not read the audit trail: {error}",
                     error=failure.type.__name__)  # fmt: skip
            return 0

        self.done = d.addErrback(failed)

    def stopService(self) -> None:  # noqa: N802
        return None

    def prepare(self, config: Config) -> Callable[[], None]:
        return lambda: None
