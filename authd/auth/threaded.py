"""The engine as front-ends use it: decisions run in the bounded `auth` thread pool,
metrics are recorded on the way back, and any unexpected error turns into a reject
(fail closed) with its traceback logged. Front-ends never see an exception.

Hand-offs are batched (measured: a pool job plus a callFromThread per request cost
~20 µs of CPU and a GIL hand-over each way): requests wait in a queue that drainer jobs
in the pool empty, and finished decisions go back to the reactor in batches.

How many drainers run: up to `pool.max`, except that at most `store_only_threads`
of them take store-only requests (first_factor none) at once. Under CPython a second
thread only helps while the first waits (directory bind, password hash, PostgreSQL
round trip); SQLite store-only decisions are CPU-bound, and a second thread only adds
GIL hand-overs, which cost up to ~2x throughput when the threads sit on different cores
(measured by scripts/bench/engine). A drainer over that number stops instead of taking
a store-only request, leaving it to one that is inside a decision (it comes back).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Protocol, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFromThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from authd.auth.engine import GENERIC_REJECT, DecisionStats, Engine
from authd.auth.interfaces import AuthRequest, Decision, Outcome, Reason
from authd.metrics import Metrics

log = Logger()

# Metric labels come from small fixed sets (metrics.py): anything else is "other".
_FRONTENDS = frozenset({"radius", "http", "authctl"})
# Finished decisions held back at most this many while more requests wait (bounds the
# added latency under overload to one batch of decisions).
_DELIVERY_BATCH = 16


class ReactorLike(Protocol):
    """What this module needs of a reactor: the time, and a way back from threads."""

    def seconds(self) -> float: ...

    def callFromThread(self, f: object, *args: object) -> object: ...  # noqa: N802


def _frontend_label(frontend: str) -> str:
    return frontend if frontend in _FRONTENDS else "other"


class ThreadedEngine:
    """`authenticate(req) -> Deferred[Decision]`; the Deferred never fails."""

    def __init__(
        self,
        engine: Engine,
        reactor: ReactorLike,
        pool: ThreadPool,
        metrics: Metrics,
        *,
        store_only_threads: int | None = None,
    ) -> None:
        """store_only_threads: see the module doc; None means `pool.max` (SQLite
        deployments want 1)."""
        self._engine = engine
        self._reactor = reactor
        self._pool = pool
        self._metrics = metrics
        self._lock = threading.Lock()
        self._todo: deque[tuple[AuthRequest, float, Deferred[tuple[Decision, DecisionStats]]]]
        self._todo = deque()
        self._done: list[tuple[Deferred[tuple[Decision, DecisionStats]], object]] = []
        self._drainers = 0
        self._in_decision = 0  # drainers inside a decision (they come back to the queue)
        self._store_only_running = 0  # ... inside a store-only one
        self._store_only_threads = store_only_threads
        self._flush_pending = False  # a _deliver call is on its way to the reactor

    def _submit(self, req: AuthRequest, now: float) -> Deferred[tuple[Decision, DecisionStats]]:
        d: Deferred[tuple[Decision, DecisionStats]] = Deferred()
        with self._lock:
            self._todo.append((req, now, d))
            idle = self._drainers - self._in_decision  # started or about to pop
            start = self._drainers == 0 or (
                self._drainers < self._pool.max
                and (
                    req.first_factor != "none"
                    or (
                        len(self._todo) > idle
                        and self._store_only_running + idle < self._store_only_target()
                    )
                )
            )
            if start:
                self._drainers += 1
        if start:
            self._pool.callInThread(self._drain)
        return d

    def _store_only_target(self) -> int:
        limit = self._store_only_threads
        return max(1, self._pool.max if limit is None else min(limit, self._pool.max))

    def _drain(self) -> None:
        """In a pool thread: decide queued requests until none is left."""
        while True:
            with self._lock:
                if not self._todo:
                    self._drainers -= 1
                    return
                store_only = self._todo[0][0].first_factor == "none"
                if store_only and self._store_only_running >= self._store_only_target():
                    # Enough threads on CPU-bound work already; one of them (inside a
                    # store-only decision, so it comes back) takes this request.
                    self._drainers -= 1
                    return
                req, now, d = self._todo.popleft()
                self._in_decision += 1
                self._store_only_running += store_only
                # Results are held back only while this thread goes on to a store-only
                # decision (~0.1 ms); before one that may wait on a directory or a
                # password hash, whatever is finished goes back first.
                wake = bool(self._done) and not self._flush_pending and req.first_factor != "none"
                if wake:
                    self._flush_pending = True
            if wake:
                self._reactor.callFromThread(self._deliver)
            result: object
            try:
                result = self._engine.decide_with_stats(req, now)
            except BaseException:  # handed to the Deferred's errback on the reactor
                result = Failure()
            with self._lock:
                self._in_decision -= 1
                self._store_only_running -= store_only
                self._done.append((d, result))
                # Wake the reactor when the queue ran dry (nothing to wait for) or a
                # batch is full: under load it is woken per batch, not per decision.
                wake = not self._flush_pending and (
                    not self._todo or len(self._done) >= _DELIVERY_BATCH
                )
                if wake:
                    self._flush_pending = True
            if wake:
                self._reactor.callFromThread(self._deliver)

    def _deliver(self) -> None:
        """On the reactor: fire every finished decision's Deferred."""
        with self._lock:
            done, self._done = self._done, []
            self._flush_pending = False
        for d, result in done:
            if isinstance(result, Failure):
                d.errback(result)
            else:
                d.callback(cast(tuple[Decision, DecisionStats], result))

    def authenticate(self, req: AuthRequest) -> Deferred[Decision]:
        """Decide `req` in the pool at the reactor's current time."""
        frontend = _frontend_label(req.frontend)
        in_flight = self._metrics.in_flight.labels(frontend=frontend)
        in_flight.inc()
        now = self._reactor.seconds()
        d = self._submit(req, now)

        def measured(result: tuple[Decision, DecisionStats]) -> Decision:
            decision, stats = result
            self._metrics.store_latency.observe(stats.store_seconds)
            if stats.locked_now:
                self._metrics.lockouts.inc()
            return decision

        def failed(failure: Failure) -> Decision:
            # AuthRequest's repr hides password, otp and state: only names are logged.
            log.failure(
                "decision failed, rejecting: frontend={frontend} client={client} user={user}",
                failure,
                frontend=req.frontend,
                client=req.client,
                user=req.user,
            )
            return Decision(Outcome.REJECT, Reason.BACKEND_DOWN, req.user, GENERIC_REJECT)

        def counted(decision: Decision) -> Decision:
            in_flight.dec()
            self._metrics.requests.labels(
                frontend=frontend, result=decision.outcome.value, reason=decision.reason.value
            ).inc()
            return decision

        return d.addCallbacks(measured, failed).addCallback(counted)

    def check_ready(self) -> Deferred[dict[str, str]]:
        """{"store": "ok" | "error: <type>", <backend name>: ...} for /readyz; runs in
        the pool because pings block. Error texts are exception type names only."""
        return deferToThreadPool(
            cast(IReactorFromThreads, self._reactor), self._pool, self._ping_all
        )

    def _ping_all(self) -> dict[str, str]:
        checks = [("store", self._engine.store.ping)]
        checks += [(backend.name, backend.ping) for backend in self._engine.backends]
        status: dict[str, str] = {}
        for name, ping in checks:
            try:
                ping()
            except Exception as e:  # any failure means "not ready"; report, don't raise
                log.warn(
                    "readiness check failed for {name}: {error}", name=name, error=type(e).__name__
                )
                status[name] = f"error: {type(e).__name__}"
            else:
                status[name] = "ok"
        return status
