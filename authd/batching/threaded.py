"""Decisions as front-ends use them: they run in the bounded `auth` thread pool,
metrics are recorded on the way back, and any unexpected error turns into a reject
(fail closed), logged with its traceback when decisions start failing (auth/outage.py).
Front-ends never see an exception.

Hand-offs are batched (measured: a pool job plus a callFromThread per request cost
~20 µs of CPU and a GIL hand-over each way): requests wait in a queue that drainer jobs
in the pool empty, and finished decisions go back to the reactor in batches. On the
reactor each result costs one plain Deferred callback and metric updates on label
children bound once.

A drainer takes turns of two kinds. A store turn takes the items waiting at the head of
the queue together (`Decisions.decide_many`, batch.py: reads without the write lock,
then one write transaction for all of them; every answer only after its COMMIT). A
decision that needs blocking work (`Pending`: a first factor, a directory lookup, a
challenge State) comes back from a store turn after its reads; a first-factor turn runs
that work (a directory bind or a password hash, which block) and puts it back first in
line, so that its write joins the next store turn's transaction instead of costing one
of its own (measured with an LDAP first factor on SQLite: reads and write alone ~145 µs
a decision, batched ~30). With `OneByOne` (tokens in a directory) each request is
decided whole in one turn.

How many drainers run: up to `pool.max`, except that at most `store_threads` of them
are in a store turn at once. Under CPython a second thread only helps while the first
waits (directory bind, password hash, PostgreSQL round trip). The daemon runs batches
one store turn at a time (app.py): the next turn then takes every request that came
meanwhile, so batches grow with the load, and a batch costs less per request than
two half-size ones, on SQLite (a second thread only adds GIL hand-overs, up to ~2x
throughput lost when the threads sit on different cores: scripts/bench/engine) and on
PostgreSQL (per request, about half the authd CPU and half the server CPU:
scripts/bench/nodes). A drainer over that number takes a first-factor turn or stops,
leaving store work to one that is inside a turn (it comes back).

Not done, measured: deciding SQLite store-only batches on the reactor thread itself
(no hop; a non-blocking BEGIN with a fall-back to the pool) gave no gain once hand-offs
were batched (RADIUS bench, one core: 131 vs 129 µs CPU per request), and would put
WAL checkpoints (fsync) and cold page reads on the reactor.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Protocol

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from authd.auth.interfaces import AuthRequest, Decision, Outcome, Reason
from authd.auth.outage import FailureLog
from authd.batching.batch import Decisions, Item, Result
from authd.core.errors import StoreTimeout
from authd.decision.attempt import Pending
from authd.decision.request import GENERIC_REJECT
from authd.metrics import Metrics

log = Logger(namespace="authd.batching.threaded")

# Metric labels come from small fixed sets (metrics.py): anything else is "other".
_FRONTENDS = frozenset({"radius", "http", "authctl"})
# Finished decisions held back at most this many while more requests wait (bounds the
# added latency under overload to one batch of decisions).
_DELIVERY_BATCH = 16


class ReactorLike(Protocol):
    """What this module needs of a reactor: the time, and a way back from threads."""

    def seconds(self) -> float: ...

    def callFromThread(self, f: object, *args: object) -> object: ...  # noqa: N802


# A queued request (or a paused decision whose blocking step has run), the reactor
# time it arrived at (for a paused decision: moved on by the time its step took, which
# has its own bound), its answer and its front-end's metrics.
_Entry = tuple[AuthRequest | Pending, float, Deferred[Decision], "_Metered"]
# While first factors wait for a thread, a store turn waits for this many items, or for
# its oldest to have waited _STORE_WAIT seconds: one transaction for several decisions
# instead of one each (a thread that just checked a first factor would otherwise take a
# store turn for that one decision alone). Measured with scripts/bench/radius --ldap.
_STORE_MIN = 16
_STORE_WAIT = 0.001


def _request(item: AuthRequest | Pending) -> AuthRequest:
    return item.request if isinstance(item, Pending) else item


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
        decisions: Decisions,
        reactor: ReactorLike,
        pool: ThreadPool,
        metrics: Metrics,
        *,
        store_threads: int | None = None,
        store_timeout: float | None = None,
    ) -> None:
        """store_threads: see the module doc; None means `pool.max` (SQLite deployments
        want 1). store_timeout (store.timeout): how long a request may wait for the
        store in all, queueing included; None: no limit."""
        self._decisions = decisions
        self._engine = decisions.engine
        self._reactor = reactor
        self._pool = pool
        self._metrics = metrics
        self._failures = FailureLog(metrics)
        self._metered = {label: _Metered(metrics, label) for label in (*_FRONTENDS, "other")}
        metrics.before_collect(self._publish_in_flight)
        self._lock = threading.Lock()
        self._todo: deque[_Entry] = deque()  # for store turns
        self._todo_since = 0.0  # time.monotonic() when _todo last became non-empty
        self._due: deque[_Entry] = deque()  # paused decisions, for first-factor turns
        self._done: list[tuple[AuthRequest, Deferred[Decision], _Metered, Result]] = []
        self._drainers = 0
        self._in_decision = 0  # drainers inside a turn (they come back to the queues)
        self._store_turns = 0  # ... inside a store turn
        self._store_threads = store_threads
        self._store_timeout = store_timeout
        # Several requests per store turn, and blocking steps in turns of their own,
        # where that saves work (Batched); OneByOne decides each whole in its own turn.
        self._pause = decisions.pauses
        self._batch = decisions.batch_size
        self._flush_pending = False  # a _deliver call is on its way to the reactor

    def _publish_in_flight(self) -> None:
        for metered in self._metered.values():
            metered.in_flight.set(metered.pending)

    def _store_turn_target(self) -> int:
        limit = self._store_threads
        return max(1, self._pool.max if limit is None else min(limit, self._pool.max))

    def _drain(self) -> None:
        """In a pool thread: take turns until no work is left. A store turn decides the
        requests (and paused decisions whose step has run) at the head of the queue
        together (`Decisions.decide_many`: one transaction); at most `store_threads`
        run at once. A first-factor turn runs one paused decision's blocking step (a
        directory bind, a password hash: several run side by side) and queues it, first
        in line, for a store turn to finish."""
        todo, due = self._todo, self._due
        while True:
            with self._lock:
                # Not paused (OneByOne), a request with a first factor is decided whole
                # and may wait on a directory: it does not count toward store_threads.
                head_blocks = (
                    bool(todo) and not self._pause and _request(todo[0][0]).first_factor != "none"
                )
                ready = bool(todo) and (
                    not due
                    or len(todo) >= _STORE_MIN
                    or time.monotonic() - self._todo_since >= _STORE_WAIT
                )
                store_turn = bool(todo) and (
                    head_blocks or (ready and self._store_turns < self._store_turn_target())
                )
                counted = store_turn and not head_blocks
                if store_turn:
                    taken = [todo.popleft()]
                    while todo and len(taken) < self._batch:
                        taken.append(todo.popleft())
                    if todo:
                        self._todo_since = time.monotonic()
                elif due:
                    taken = [due.popleft()]
                else:
                    self._drainers -= 1
                    return
                self._in_decision += 1
                self._store_turns += counted
                # Results are held back only while this thread goes on to store-only
                # work (~0.1 ms a decision); before a first factor, which may wait on a
                # directory or a password hash, whatever is finished goes back first.
                wake = bool(self._done) and not self._flush_pending and not counted
                if wake:
                    self._flush_pending = True
            if wake:
                self._reactor.callFromThread(self._deliver)
            finished: list[tuple[AuthRequest, Deferred[Decision], _Metered, Result]] = []
            paused: list[_Entry] = []
            if store_turn:
                taken = self._expire(taken, finished)
                try:
                    results = self._decide(taken) if taken else []
                except BaseException as e:  # noqa: BLE001 - each caller gets a reject
                    results = [e] * len(taken)
                    if isinstance(e, Exception):
                        # One audit write tried per failed turn: against a hung store
                        # each would wait out store.timeout.
                        write = True
                        for item, now, _, _ in taken:
                            write = self._engine.record_failure(_request(item), now, e, write)
                for (item, now, d, m), r in zip(taken, results, strict=True):
                    if isinstance(r, Pending):
                        paused.append((r, now, d, m))
                    else:
                        finished.append((_request(item), d, m, r))
            else:
                checking, since, d, m = taken[0]
                assert isinstance(checking, Pending)
                started = self._reactor.seconds()
                checking.run_outside()  # never raises: an error is kept for decide_many
                taken[0] = (checking, since + self._reactor.seconds() - started, d, m)
            with self._lock:
                self._in_decision -= 1
                self._store_turns -= counted
                self._done.extend(finished)
                if not store_turn:
                    if not todo:
                        self._todo_since = time.monotonic()
                    todo.appendleft(taken[0])  # the oldest request: finished first
                due.extend(paused)
                # Threads for the paused first factors that no idle drainer will take.
                idle = self._drainers - self._in_decision - 1
                more = max(0, min(len(due) - idle, self._pool.max - self._drainers))
                self._drainers += more
                # Wake the reactor when the queue ran dry (nothing to wait for) or a
                # batch is full: under load it is woken per batch, not per decision.
                wake = (
                    bool(self._done)
                    and not self._flush_pending
                    and (not todo or len(self._done) >= _DELIVERY_BATCH)
                )
                if wake:
                    self._flush_pending = True
            for _ in range(more):
                self._pool.callInThread(self._drain)
            if wake:
                self._reactor.callFromThread(self._deliver)

    def _expire(
        self,
        taken: list[_Entry],
        finished: list[tuple[AuthRequest, Deferred[Decision], _Metered, Result]],
    ) -> list[_Entry]:
        """The entries still worth deciding. One that waited store_timeout or longer is
        rejected without being decided or committed: its client is giving up (RADIUS
        clients wait ~3 s), and a stuck store would otherwise decide, commit and burn
        the codes of requests nobody waits for any more once it is back."""
        limit = self._store_timeout
        if limit is None:
            return taken
        now = self._reactor.seconds()
        live: list[_Entry] = []
        for entry in taken:
            if now - entry[1] < limit:
                live.append(entry)
            else:
                late = StoreTimeout(f"waited longer than store.timeout ({limit}s) for the store")
                finished.append((_request(entry[0]), entry[2], entry[3], late))
        return live

    def _decide(self, taken: list[_Entry]) -> list[Result | Pending]:
        """One store turn. With store_timeout, the turn's store waits together stay
        within what is left of it for the oldest of its requests."""
        items: list[Item] = [
            item if isinstance(item, Pending) else (item, now) for item, now, _, _ in taken
        ]
        limit = self._store_timeout
        if limit is None:
            return self._decisions.decide_many(items)
        left = limit - (self._reactor.seconds() - min(entry[1] for entry in taken))
        with self._decisions.time_budget(left):
            return self._decisions.decide_many(items)

    def _deliver(self) -> None:
        """On the reactor: record metrics and fire every finished decision's Deferred
        (one plain callback each, no chain)."""
        with self._lock:
            done, self._done = self._done, []
            self._flush_pending = False
        observe = self._metrics.store_latency.observe
        now = self._reactor.seconds()
        counts: dict[tuple[_Metered, Outcome, Reason], int] = {}
        answers: list[tuple[Deferred[Decision], Decision]] = []
        for req, d, metered, result in done:
            if isinstance(result, BaseException):
                self._failures.failed(req, result, now)
                decision = Decision(Outcome.REJECT, Reason.UNAVAILABLE, req.user, GENERIC_REJECT)
            else:
                if self._failures.failing:
                    self._failures.succeeded(now)
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

    def authenticate(self, req: AuthRequest) -> Deferred[Decision]:
        """Decide `req` in the pool at the reactor's current time."""
        frontend = req.frontend
        metered = self._metered[frontend if frontend in _FRONTENDS else "other"]
        metered.pending += 1
        d: Deferred[Decision] = Deferred()
        entry = (req, self._reactor.seconds(), d, metered)
        with self._lock:
            if not self._todo:
                self._todo_since = time.monotonic()
            self._todo.append(entry)
            idle = self._drainers - self._in_decision  # started or about to pop
            start = self._drainers == 0 or (
                self._drainers < self._pool.max
                and (
                    # decided whole in one turn (PostgreSQL): may wait on a directory
                    (not self._pause and req.first_factor != "none")
                    or (
                        len(self._todo) > idle
                        and self._store_turns + idle < self._store_turn_target()
                    )
                )
            )
            if start:
                self._drainers += 1
        if start:
            self._pool.callInThread(self._drain)
        return d
