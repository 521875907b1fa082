"""The engine as front-ends use it: decisions run in the bounded `auth` thread pool,
metrics are recorded on the way back, and any unexpected error turns into a reject
(fail closed) with its traceback logged. Front-ends never see an exception.

Hand-offs are batched (measured: a pool job plus a callFromThread per request cost
~20 µs of CPU and a GIL hand-over each way): requests wait in a queue that drainer jobs
in the pool empty, and finished decisions go back to the reactor in batches. A drainer
takes the store-only requests waiting at the head of the queue together
(`Engine.decide_many`: reads without the write lock, then one SQLite write transaction
for all of them; every answer only after its COMMIT). On the reactor each result costs
one plain Deferred callback and metric updates on label children bound once.

How many drainers run: up to `pool.max`, except that at most `store_only_threads`
of them take store-only requests (first_factor none) at once. Under CPython a second
thread only helps while the first waits (directory bind, password hash, PostgreSQL
round trip); SQLite store-only decisions are CPU-bound, and a second thread only adds
GIL hand-overs, which cost up to ~2x throughput when the threads sit on different cores
(measured by scripts/bench/engine). A drainer over that number stops instead of taking
a store-only request, leaving it to one that is inside a decision (it comes back).

Not done, measured: deciding SQLite store-only batches on the reactor thread itself
(no hop; a non-blocking BEGIN with a fall-back to the pool) gave no gain once hand-offs
were batched (RADIUS bench, one core: 131 vs 129 µs CPU per request), and would put
WAL checkpoints (fsync) and cold page reads on the reactor.
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


_Result = tuple[Decision, DecisionStats] | BaseException
# Store-only requests one drainer takes at once (Engine.decide_many: their reads under
# one snapshot, their writes in one SQLite transaction, ~15 µs of write lock each);
# bounds the latency a batch adds (~0.1 ms of decision each).
_STORE_ONLY_BATCH = 64


class _Metered:
    """The label children one front-end's requests update, bound once: `labels()` costs
    a lock and a dict lookup per call, several µs per request on the reactor. Requests
    in flight are a plain integer (changed on the reactor only), set on the gauge before
    each collection instead of a locked inc/dec per request."""

    __slots__ = ("in_flight", "label", "metrics", "pending", "requests")

    def __init__(self, metrics: Metrics, label: str) -> None:
        self.metrics = metrics
        self.label = label
        self.in_flight = metrics.in_flight.labels(frontend=label)
        self.pending = 0
        self.requests: dict[tuple[Outcome, Reason], object] = {}

    def count(self, key: tuple[Outcome, Reason], n: int) -> None:
        child = self.requests.get(key)
        if child is None:
            child = self.requests[key] = self.metrics.requests.labels(
                frontend=self.label, result=key[0].value, reason=key[1].value
            )
        child.inc(n)  # type: ignore[attr-defined]


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
        self._metered = {label: _Metered(metrics, label) for label in (*_FRONTENDS, "other")}
        metrics.before_collect(self._publish_in_flight)
        self._lock = threading.Lock()
        self._todo: deque[tuple[AuthRequest, float, Deferred[Decision], _Metered]] = deque()
        self._done: list[tuple[AuthRequest, Deferred[Decision], _Metered, _Result]] = []
        self._drainers = 0
        self._in_decision = 0  # drainers inside a decision (they come back to the queue)
        self._store_only_running = 0  # ... inside a store-only one
        self._store_only_threads = store_only_threads
        # Several store-only requests per drainer turn only where that saves work (one
        # SQLite transaction); elsewhere (PostgreSQL) each may take its own thread.
        self._batch = _STORE_ONLY_BATCH if engine.batches_decisions else 1
        self._flush_pending = False  # a _deliver call is on its way to the reactor

    def _publish_in_flight(self) -> None:
        for metered in self._metered.values():
            metered.in_flight.set(metered.pending)

    def _store_only_target(self) -> int:
        limit = self._store_only_threads
        return max(1, self._pool.max if limit is None else min(limit, self._pool.max))

    def _drain(self) -> None:
        """In a pool thread: decide queued requests until none is left. Consecutive
        store-only requests at the head of the queue are decided together (one
        `Engine.decide_many`, one transaction on SQLite)."""
        todo = self._todo
        while True:
            with self._lock:
                if not todo:
                    self._drainers -= 1
                    return
                store_only = todo[0][0].first_factor == "none"
                if store_only and self._store_only_running >= self._store_only_target():
                    # Enough threads on CPU-bound work already; one of them (inside a
                    # store-only decision, so it comes back) takes this request.
                    self._drainers -= 1
                    return
                taken = [todo.popleft()]
                if store_only:
                    while todo and len(taken) < self._batch and todo[0][0].first_factor == "none":
                        taken.append(todo.popleft())
                self._in_decision += 1
                self._store_only_running += store_only
                # Results are held back only while this thread goes on to store-only
                # decisions (~0.1 ms each); before one that may wait on a directory or a
                # password hash, whatever is finished goes back first.
                wake = bool(self._done) and not self._flush_pending and not store_only
                if wake:
                    self._flush_pending = True
            if wake:
                self._reactor.callFromThread(self._deliver)
            results: list[_Result]
            if store_only:
                try:
                    results = self._engine.decide_many([(req, now) for req, now, _, _ in taken])
                except BaseException as e:  # noqa: BLE001 - each caller gets a reject
                    results = [e] * len(taken)
            else:
                req, now, _, _ = taken[0]
                try:
                    results = [self._engine.decide_with_stats(req, now)]
                except BaseException as e:  # noqa: BLE001 - handed to _deliver
                    results = [e]
            with self._lock:
                self._in_decision -= 1
                self._store_only_running -= store_only
                self._done.extend(
                    (req, d, m, r) for (req, _, d, m), r in zip(taken, results, strict=True)
                )
                # Wake the reactor when the queue ran dry (nothing to wait for) or a
                # batch is full: under load it is woken per batch, not per decision.
                wake = not self._flush_pending and (not todo or len(self._done) >= _DELIVERY_BATCH)
                if wake:
                    self._flush_pending = True
            if wake:
                self._reactor.callFromThread(self._deliver)

    def _deliver(self) -> None:
        """On the reactor: record metrics and fire every finished decision's Deferred
        (one plain callback each, no chain)."""
        with self._lock:
            done, self._done = self._done, []
            self._flush_pending = False
        observe = self._metrics.store_latency.observe
        counts: dict[tuple[_Metered, Outcome, Reason], int] = {}
        answers: list[tuple[Deferred[Decision], Decision]] = []
        for req, d, metered, result in done:
            if isinstance(result, BaseException):
                decision = self._failed(req, result)
            else:
                decision, stats = result
                observe(stats.store_seconds)
                if stats.locked_now:
                    self._metrics.lockouts.inc()
            key = (metered, decision.outcome, decision.reason)
            counts[key] = counts.get(key, 0) + 1
            answers.append((d, decision))
        # Counters move by the batch (one locked update per label set, not per request),
        # before any callback runs: a front-end reading metrics after its answer sees it.
        for (metered, outcome, reason), n in counts.items():
            metered.pending -= n
            metered.count((outcome, reason), n)
        for d, decision in answers:
            d.callback(decision)

    @staticmethod
    def _failed(req: AuthRequest, error: BaseException) -> Decision:
        # AuthRequest's repr hides password, otp and state: only names are logged.
        log.failure(
            "decision failed, rejecting: frontend={frontend} client={client} user={user}",
            Failure(error, type(error), error.__traceback__),
            frontend=req.frontend,
            client=req.client,
            user=req.user,
        )
        return Decision(Outcome.REJECT, Reason.BACKEND_DOWN, req.user, GENERIC_REJECT)

    def authenticate(self, req: AuthRequest) -> Deferred[Decision]:
        """Decide `req` in the pool at the reactor's current time."""
        frontend = req.frontend
        metered = self._metered[frontend if frontend in _FRONTENDS else "other"]
        metered.pending += 1
        d: Deferred[Decision] = Deferred()
        entry = (req, self._reactor.seconds(), d, metered)
        with self._lock:
            self._todo.append(entry)
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
