"""What `/readyz` asks: does the store answer, does every first-factor backend answer.

The checks block (a database round trip, a directory read bounded by the backend's
request deadline), so they run on a pool of their own, never on the decision pool:
a health check must neither wait behind decisions nor make them wait. At most one
round of checks runs at a time, and a result is reused for `ttl` seconds, so however
often load balancers (or anyone, the endpoint needs no key) ask, the dependencies see
at most one round per `ttl`; callers arriving while a round runs share its result.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

log = Logger(namespace="authd.readiness")

CACHE_SECONDS = 2.0  # a result reused this long; well under a load balancer's interval

Check = tuple[str, Callable[[], None]]  # (component name, a ping that raises when down)


class ReadinessProbe:
    """Runs the pings on `pool` (one thread is enough), one round at a time, cached."""

    def __init__(
        self, checks: Sequence[Check], reactor: Any, pool: ThreadPool,
        ttl: float = CACHE_SECONDS,
    ) -> None:
        self._checks = tuple(checks)
        self._reactor = reactor
        self._pool = pool
        self._ttl = ttl
        self._result: dict[str, str] | None = None
        self._at = 0.0
        self._waiting: list[Deferred[dict[str, str]]] | None = None  # a round is running

    def check(self) -> Deferred[dict[str, str]]:
        """{"store": "ok" | "error: <type>", <backend name>: ...}; error texts are
        exception type names only."""
        now = self._reactor.seconds()
        if self._result is not None and now - self._at < self._ttl:
            return succeed(dict(self._result))
        d: Deferred[dict[str, str]] = Deferred()
        if self._waiting is not None:
            self._waiting.append(d)
            return d
        self._waiting = [d]
        round_ = deferToThreadPool(self._reactor, self._pool, self._ping_all)
        round_.addCallbacks(self._done, self._failed)
        return d

    def _done(self, status: dict[str, str]) -> None:
        self._result, self._at = status, self._reactor.seconds()
        waiting, self._waiting = self._waiting or [], None
        for d in waiting:
            d.callback(dict(status))

    def _failed(self, failure: Failure) -> None:
        waiting, self._waiting = self._waiting or [], None
        for d in waiting:
            d.errback(failure)

    def _ping_all(self) -> dict[str, str]:
        status: dict[str, str] = {}
        for name, ping in self._checks:
            try:
                ping()
            except Exception as e:  # noqa: BLE001 (any failure means "not ready"; report it)
                log.warn(
                    "readiness check failed for {name}: {error}", name=name, error=type(e).__name__
                )
                status[name] = f"error: {type(e).__name__}"
            else:
                status[name] = "ok"
        return status
